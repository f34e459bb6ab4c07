"""How much of the IDM's latent can any controller give? MLP readouts of z from what a controller sees.

    python benchmarks/controller_ceiling.py --run RUN [--fractions 0.1 1.0] [--out DIR]

A controller maps actions (and the observed states) to the latent the IDM infers for the transition they
caused. If z is not a function of those inputs (it also carries what the frames show of the next state
beyond the action: the velocity, the parts of the pose the features read badly), no controller can stand
in for the IDM, however it is fit. This script measures that bound on the run's own frozen encoder and IDM,
with no controller at all: a small MLP (:func:`lavid.metrics.probe.mlp_probe`: two hidden layers,
early-stopped on the last fifth of its training transitions, which are whole episodes, seeded) reads z_t
from each set of inputs below, fit on the transitions of ``fraction`` of the run's training episodes (drawn
as the controller draws its labeled ones) and scored on every transition of the run's held-out episodes:

- ``a_t``: the action alone (the ``mlp`` controller's input);
- ``s_t`` and ``s_t−1, s_t``: the states alone (what z owes to where the body is, not to the action);
- ``s_t, a_t`` and ``s_t−1, s_t, a_t, a_t−1``: the step-by-step controllers' inputs;
- ``s_t, s_t+1``: the two states the IDM itself reads (a check of the readout: z is a function of them).

``benchmarks/latent_physics.py`` is the same question asked of the simulator's true state instead of the features
(what a controller that knew the physics exactly could give).

R² is over every entry of z together, weighted by its variance (the controller's ``latent_r2``), on the
posterior means (eval mode). States are the encoder's tokens ``[N, D]`` flattened. Prints a markdown table
and writes it with a JSON copy into ``--out`` (default ``RUN/controller_ceiling``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

INPUTS = {"a_t": ("a",), "s_t": ("s",), "s_t−1, s_t": ("p", "s"), "s_t, a_t": ("s", "a"),
          "s_t−1, s_t, a_t, a_t−1": ("p", "s", "a", "b"), "s_t, s_t+1 (the IDM's)": ("s", "n")}


def transitions(run, episodes, device):
    """Every transition of ``episodes`` (:func:`lavid.planning.fit_controller.collect_transitions`) as flat inputs:
    ``{"p", "s", "n": [M, N·D]`` (s_t−1, s_t, s_t+1; s_t−1 = s_t at an episode's first step), ``"a", "b": [M, A]``
    (a_t, a_t−1; zeros before the first step), ``"z": [M, C]``}."""
    from lavid.data.data_config import DataConfig
    from lavid.data.training_data import data_action_dim
    from lavid.planning.fit_controller import collect_transitions

    data = collect_transitions(run, episodes, data_action_dim(DataConfig(data=run.config.data.data)), device)
    return {"p": data.states[:, 0].flatten(1).float(), "s": data.states[:, 1].flatten(1).float(),
            "n": data.following.flatten(1).float(), "a": data.actions.float(), "b": data.previous.float(),
            "z": data.latents.float()}


def read_latent(fit: dict, test: dict, keys: tuple[str, ...], hidden: int = 256, max_steps: int = 4000,
                seed: int = 0) -> tuple[float, int]:
    """An MLP readout of ``fit["z"]`` from the entries ``keys`` of ``fit`` (see :func:`transitions`), scored on
    ``test``: ``(R² over every entry of z, weighted by its variance; the optimizer step kept)``."""
    import torch

    from lavid.metrics.probe import mlp_probe

    result = mlp_probe(torch.cat([fit[k] for k in keys], 1), fit["z"], torch.cat([test[k] for k in keys], 1), test["z"],
                       hidden=hidden, max_steps=max_steps, seed=seed, return_prediction=True)
    truth = test["z"]
    r2 = float(1 - (result["prediction"] - truth).pow(2).sum() / (truth - truth.mean(0)).pow(2).sum())
    return r2, int(result["steps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a trained latent-action run (lavid/train.py's out_dir)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0],
                        help="shares of the training episodes the readouts fit on (as the controller's labels)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="default RUN/controller_ceiling")
    args = parser.parse_args(argv)
    for fraction in args.fractions:
        if not 0 < fraction <= 1:
            parser.error(f"--fractions: each must be in (0, 1], got {fraction}")
    import torch

    from lavid.core.threads import usable_cores
    from lavid.planning.fit_controller import choose_labeled, split_episodes
    from lavid.training.runs import RunError, load_run

    torch.set_num_threads(usable_cores())
    device = torch.device("cpu")
    try:
        run = load_run(args.run, device)
    except RunError as error:
        parser.error(f"--run: {error}")
    if run.model.action_conditioned:
        parser.error(f"{args.run} is conditioned on actions: it has no latent to read")
    train, held = split_episodes(run.config.data.data, run.config.data.holdout_fraction)
    started = time.perf_counter()
    with torch.no_grad():
        test = transitions(run, held, device)
    rows, fits = [], {}
    for fraction in args.fractions:
        labeled = choose_labeled(train, fraction, args.seed)
        with torch.no_grad():
            fit = transitions(run, labeled, device)
        fits[fraction] = len(fit["z"])
        for name, keys in INPUTS.items():
            begin = time.perf_counter()
            r2, step = read_latent(fit, test, keys, args.hidden, args.max_steps, args.seed)
            rows.append({"fraction": fraction, "transitions": len(fit["z"]), "inputs": name, "r2": r2, "steps": step,
                         "seconds": time.perf_counter() - begin})
            print(f"fraction {fraction:g} ({len(fit['z'])} transitions), {name}: held-out R² {r2:.3f} "
                  f"(kept step {step})", flush=True)
    lines = [f"run `{args.run}`: z ({test['z'].shape[1]} entries) read by an MLP ({args.hidden} wide, early-stopped, "
             f"seed {args.seed}) on {len(test['z'])} held-out transitions ({len(held)} episodes); "
             f"{time.perf_counter() - started:.0f} s in all", "",
             "| inputs | " + " | ".join(f"{f:g} of the episodes ({fits[f]} transitions)" for f in args.fractions) + " |",
             "|---|" + "---|" * len(args.fractions)]
    for name in INPUTS:
        cells = [next(r for r in rows if r["inputs"] == name and r["fraction"] == f)["r2"] for f in args.fractions]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    out = Path(args.out or Path(args.run) / "controller_ceiling")
    out.mkdir(parents=True, exist_ok=True)
    (out / "controller_ceiling.md").write_text(table + "\n")
    (out / "controller_ceiling.json").write_text(json.dumps({"run": str(args.run), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
