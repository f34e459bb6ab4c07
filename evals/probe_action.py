"""Is the latent the action? Held-out linear probes from a trained run's latents to the true actions.

    python evals/probe_action.py --checkpoint runs/tiny --out runs/tiny/action_probe

Per task (action spaces differ between tasks): a ridge regression (strength by cross-validation) from
each transition's IDM latent z to the true actions of that step, fit on training clips and scored by R²
on held-out clips of the run's own split. Beside it, the same probe from the run's own feature change
``s_t+1 − s_t``: what the frames show of the action at all, the ceiling a z inferred from those two
frames can be expected to reach. Writes action_probe.md and action_probe.json into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lavid.cli import fail, setup_logging  # noqa: E402


def probe_table(model, config, train_clips: int, heldout_clips: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """``{task: {"z": R², "change": R², "train": transitions, "heldout": transitions}}`` for ``model``."""
    import torch

    from lavid.actions import transition_actions
    from lavid.eval_data import load_split
    from lavid.latent_evals import encode_clips
    from lavid.probe import linear_probe

    def transitions(split: str, count: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        clips = load_split(config.data, split, count, seed=seed)
        states, _ = encode_clips(model, clips.frames)
        latents = model.infer_latents(states)[0].cpu()
        change = (states[:, 1:] - states[:, :-1]).flatten(2).cpu()
        grouped: dict[str, list] = {}
        for i, actions in enumerate(clips.actions):
            if actions is None or not clips.tasks[i]:
                continue
            grouped.setdefault(clips.tasks[i], []).append(
                (latents[i], change[i], transition_actions(actions[None], config.model.encoder.tubelet)[0]))
        return {task: tuple(torch.cat(parts) for parts in zip(*rows)) for task, rows in grouped.items()}

    model.eval()
    with torch.no_grad():
        fit, test = transitions("train", train_clips), transitions("heldout", heldout_clips)
    out = {}
    for task in sorted(set(fit) & set(test)):
        (z, change, actions), (z_test, change_test, actions_test) = fit[task], test[task]
        out[task] = {"z": linear_probe(z, actions, z_test, actions_test)["r2_mean"],
                     "change": linear_probe(change, actions, change_test, actions_test)["r2_mean"],
                     "train": len(z), "heldout": len(z_test)}
    return out


def format_table(result: dict[str, dict[str, float]]) -> str:
    lines = ["| task | transitions (train / held out) | R² from z | R² from the feature change |", "|---|---|---|---|"]
    for task, row in result.items():
        lines.append(f"| {task} | {row['train']} / {row['heldout']} | {row['z']:.3f} | {row['change']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a trained run folder with a latent family")
    parser.add_argument("--train-clips", type=int, default=600, help="training clips the probes are fit on")
    parser.add_argument("--clips", type=int, default=300, help="held-out clips scored (default 300)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    setup_logging()

    from lavid.data import DatasetFormatError
    from lavid.runs import RunError, load_run

    try:
        loaded = load_run(args.checkpoint, args.device)
        if loaded.model.action_conditioned or loaded.model.idm is None:
            raise RunError(f"{args.checkpoint} has no inferred latent to probe (condition=action, or a family "
                           "without an IDM)")
        result = probe_table(loaded.model, loaded.config, args.train_clips, args.clips, loaded.config.seed)
        if not result:
            raise DatasetFormatError(f"the data of {args.checkpoint} has no clips with actions on both sides of its split")
    except (RunError, DatasetFormatError, ValueError) as error:
        return fail(error)
    table = format_table(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "action_probe.md").write_text(table + "\n")
    (out / "action_probe.json").write_text(json.dumps(result, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
