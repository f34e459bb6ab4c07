"""What the IDM's latent carries, read from the simulator's true state: is z a function of the state and the action?

A controller maps ``(a_t, s_t−1, s_t)`` (frames' features) to the IDM's latent z_t of ``s_t -> s_t+1``. Where it
falls short, either the frames do not show enough of the physical state (the controller's inputs are the limit), or
the latent carries what no physical state and action determine (the latent is the limit). This script fits the same
small MLP probe (:func:`lavid.metrics.probe.mlp_probe`, early-stopped on a validation part, seeded) from several
sets of *true* simulator quantities to z, on training episodes, and scores it on the run's held-out episodes:

- ``a_t``: the action alone;
- ``q_t, a_t``: the joint angles (sin, cos) and the action, without the velocity;
- ``q_t, q̇_t``: the physical state without the action (what unlabeled frames could teach of z);
- ``q_t, q̇_t, a_t``: the whole physical state and the action — what a perfect controller could know;
- ``q_t, q̇_t, q_t+1, q̇_t+1``: the true transition itself — the most any function of the physics explains.

Then the world model predicts the held-out windows (8 frames) with each kind of latent in place of the IDM's: the
probe's latents from ``q_t, q̇_t, a_t`` (what a controller that knew the physical state exactly would give), the
run's controllers' (``--controllers``), and the training latents' mean (no latent): one-step error (teacher-forced,
the whole window as context) and rollout error from the window's first frame, each ÷ copy. Where the probe's latents
predict about as well as the IDM's, a controller is limited by what the frames show of the state; where they
predict as badly as the controller's, the world model needs what no physical state determines.

Usage (a latent run trained on simulator data with physics stored, e.g. ``evals/plan.py``'s ``runs/latent_noisy``):
    python benchmarks/latent_physics.py --run OUT/runs/latent_noisy --train-episodes 360 --heldout-episodes 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lavid.data.goals import read_episode
from lavid.metrics.probe import mlp_probe
from lavid.planning.fit_controller import choose_labeled, split_episodes
from lavid.training.runs import load_run


@torch.no_grad()
def collect(run, episodes, nq: int):
    """Per transition: IDM latent ``[M, C]``, joint angles, velocities and actions at t and t+1."""
    rows = {k: [] for k in ("z", "q", "v", "a", "q1", "v1", "states")}
    for path, row in episodes:
        episode = read_episode(path, row)
        frames = torch.from_numpy(np.array(episode.frames))
        states = run.model.encode(frames[:, None])[:, 0]
        latent, _, _ = run.model.infer_latents(states[None])
        physics = torch.from_numpy(episode.physics).float()
        q, v = physics[:, :nq], physics[:, nq:2 * nq]
        rows["z"].append(latent[0])
        rows["states"].append(states)
        rows["q"].append(q[:-1]), rows["v"].append(v[:-1]), rows["q1"].append(q[1:]), rows["v1"].append(v[1:])
        rows["a"].append(torch.from_numpy(episode.actions[:-1]).float())
    episodes_states = rows.pop("states")
    return {**{k: torch.cat(v) for k, v in rows.items()}, "states": episodes_states}


def angles(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q.sin(), q.cos()], dim=-1)


INPUTS = {
    "a_t": lambda d: d["a"],
    "q_t, a_t": lambda d: torch.cat([angles(d["q"]), d["a"]], -1),
    "q_t, qdot_t": lambda d: torch.cat([angles(d["q"]), d["v"]], -1),
    "q_t, qdot_t, a_t": lambda d: torch.cat([angles(d["q"]), d["v"], d["a"]], -1),
    "q_t, qdot_t, q_t+1, qdot_t+1": lambda d: torch.cat([angles(d["q"]), d["v"], angles(d["q1"]), d["v1"]], -1),
}


def windows(states: list[torch.Tensor], per_step: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``frames`` steps of each episode's states ``[L, N, D]``, and of the transitions'
    ``per_step [M, K]`` (every episode's transitions in order): ``[W, T, N, D]`` and ``[W, T-1, K]``."""
    x, y, offset = [], [], 0
    for episode in states:
        for start in range(0, len(episode) - frames + 1, frames):
            x.append(episode[start:start + frames])
            y.append(per_step[offset + start:offset + start + frames - 1])
        offset += len(episode) - 1
    return torch.stack(x), torch.stack(y)


@torch.no_grad()
def prediction_errors(model, states: list[torch.Tensor], latents: torch.Tensor, frames: int = 8) -> dict[str, float]:
    """One-step (teacher-forced) and rollout (from the first frame) error ÷ copy over each episode's windows of
    ``frames`` steps, with ``latents [M, C]`` (the episodes' transitions in order) in place of the IDM's."""
    x, z = windows(states, latents.to(torch.float32), frames)
    target = x[:, 1:]
    one_step = (model.predict(x[:, :-1], z) - target).pow(2).mean() / (x[:, :-1] - target).pow(2).mean()
    rollout = (model.rollout(x[:, :1], z) - target).pow(2).mean() / (x[:, :1] - target).pow(2).mean()
    return {"one_step": float(one_step), "rollout": float(rollout)}


@torch.no_grad()
def imagined_errors(model, controller, states: list[torch.Tensor], actions: torch.Tensor, context: int,
                    frames: int = 8) -> float:
    """Rollout error ÷ copy of the controller (``None``: an action-conditioned model) imagining each window's last
    ``frames − context`` steps from its first ``context`` frames, as a plan does: the controller sees the model's
    own predictions after the first step (``context`` 1: the window's first frame twice and no action before, a
    plan's first view)."""
    from lavid.data.actions import pad_actions
    from lavid.planning.dynamics import ActionDynamics

    x, window_actions = windows(states, actions, frames)
    width = model.config.action_dim if controller is None else controller.action_dim
    a = pad_actions(window_actions, width)
    dynamics = ActionDynamics(model, controller, width)
    observed = x[:, :context]
    past = dynamics.observed_conditions(observed, a[:, :context - 1])
    previous = a[:, context - 2] if context >= 2 else None
    imagined = dynamics.imagine(observed, past, a[:, context - 1:], previous)
    target = x[:, context:]
    return float((imagined - target).pow(2).mean() / (x[:, context - 1:context] - target).pow(2).mean())


@torch.no_grad()
def controller_latents(path, test):
    """The controller at ``path`` and its latents ``[M, C]`` on the held-out transitions, each as in training
    (s_t−1, s_t; a_t−1)."""
    from lavid.data.actions import pad_actions
    from lavid.planning.dynamics import pairs
    from lavid.planning.fit_controller import load_controller

    controller, _ = load_controller(path)
    out, offset = [], 0
    for episode in test["states"]:
        steps = len(episode) - 1
        actions = pad_actions(test["a"][offset:offset + steps], controller.action_dim)
        previous = torch.cat([torch.zeros_like(actions[:1]), actions[:-1]])
        seen = pairs(episode[None])[0, :-1]
        if controller.sequential:  # each transition as a sequence of one from its true frames
            out.append(controller(actions[:, None], seen)[:, 0])
        else:
            out.append(controller(actions, seen, previous))
        offset += steps
    return torch.cat(out), controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a latent run folder trained on simulator data")
    parser.add_argument("--train-episodes", type=int, default=360, help="training episodes the probes fit on")
    parser.add_argument("--heldout-episodes", type=int, default=200, help="held-out episodes they are scored on")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--action-run", help="an action-conditioned run on the same data: its rollouts beside them")
    parser.add_argument("--controllers", nargs="*", default=["controller"],
                        help="controller folders inside the run to compare (evals/plan.py's names)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.time()
    run = load_run(args.run, "cpu")
    if run.model.action_conditioned:
        raise SystemExit(f"{args.run} is action-conditioned: it has no latent to probe")
    train, held = split_episodes(run.config.data.data, run.config.data.holdout_fraction)
    train = choose_labeled(train, min(1.0, args.train_episodes / len(train)), args.seed)
    held = held[: args.heldout_episodes]
    nq = read_episode(*train[0], frames=False).physics.shape[1] // 2
    fit, test = collect(run, train, nq), collect(run, held, nq)
    print(f"{args.run}: latent size {fit['z'].shape[1]}, {len(fit['z'])} training and {len(test['z'])} held-out "
          f"transitions ({len(train)} / {len(held)} episodes)\n")
    print("| probe inputs (true simulator quantities) | held-out R² of the IDM's latent |")
    print("|---|---:|")
    physical = None
    for name, make in INPUTS.items():
        result = mlp_probe(make(fit), fit["z"], make(test), test["z"], hidden=args.hidden, max_steps=args.max_steps,
                           seed=args.seed, return_prediction=True)
        if name == "q_t, qdot_t, a_t":
            physical = result["prediction"]
        # R² of the whole latent (variance-weighted), as the controller's latent_r2
        prediction_r2 = np.array(result["r2"], dtype=float)
        variance = test["z"].var(0).numpy()
        keep = np.isfinite(prediction_r2)
        total = float((prediction_r2[keep] * variance[keep]).sum() / variance[keep].sum())
        print(f"| {name} | {total:.3f} |", flush=True)

    model = run.model
    latents = {"the IDM's (from s_t, s_t+1)": test["z"], "the probe's from q_t, qdot_t, a_t": physical}
    controllers = {}
    for name in args.controllers:
        path = f"{args.run}/{name}"
        try:
            latents[f"controller `{name}`"], controllers[name] = controller_latents(path, test)
        except FileNotFoundError as error:
            print(f"skipped {name}: {error}")
    latents["the training latents' mean"] = fit["z"].mean(0).expand_as(test["z"])
    print("\n| latents in the world model (held-out windows of 8) | one-step ÷ copy | rollout ÷ copy |")
    print("|---|---:|---:|")
    for name, z in latents.items():
        errors = prediction_errors(model, test["states"], z)
        print(f"| {name} | {errors['one_step']:.3f} | {errors['rollout']:.3f} |", flush=True)
    print("\n| controller imagining from its own predictions | rollout ÷ copy, from 1 frame (7 steps) | "
          "from 2 frames and a_t-1 (6 steps) |")
    print("|---|---:|---:|")
    for name, controller in controllers.items():
        one = imagined_errors(model, controller, test["states"], test["a"], 1)
        two = imagined_errors(model, controller, test["states"], test["a"], 2)
        print(f"| `{name}` | {one:.3f} | {two:.3f} |", flush=True)
    if args.action_run:
        action_model = load_run(args.action_run, "cpu").model
        encoded = [action_model.encode(torch.from_numpy(np.array(read_episode(path, row).frames))[:, None])[:, 0]
                   for path, row in held]
        one = imagined_errors(action_model, None, encoded, test["a"], 1)
        two = imagined_errors(action_model, None, encoded, test["a"], 2)
        print(f"| action-conditioned `{args.action_run}` (its own features) | {one:.3f} | {two:.3f} |")
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
