"""Where is the action lost: in the encoder's features, or between the features and z?

    python benchmarks/action_sources.py --checkpoint runs/tiny --out runs/tiny/action_sources

Per task, small MLP probes (:func:`lavid.metrics.probe.mlp_probe`: early-stopped, seeded) to the true action of
each transition, fit on the run's training clips and scored by R² on its held-out clips, from:

- ``z``: the IDM's latent (the action probe of :func:`lavid.metrics.latent_evals.action_probe`);
- ``z + pose t``: z beside the true pose at t (:func:`lavid.metrics.latent_evals.conditional_probes`);
- ``features t, t+1``: the run's own frame features of both steps, every token, reduced to their leading
  ``--components`` principal components (fit on the training transitions): what the encoder shows of the
  action, the IDM's whole input;
- ``poses t, t+1``: the true poses of the same transitions (the ceiling of any function of two frames).

If the features' row is near the poses' and z's far below, the IDM or its regularizer drops the action; if the
features' row is as low as z's, the encoder never shows it. Writes action_sources.md / .json into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lavid.core.cli import fail, setup_logging

COLUMNS = (("z", "z"), ("z_pose", "z + pose t"), ("features", "features t, t+1"), ("poses", "poses t, t+1"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a trained run folder with a latent family")
    parser.add_argument("--train-clips", type=int, default=3000, help="training clips the probes are fit on")
    parser.add_argument("--clips", type=int, default=1000, help="held-out clips scored")
    parser.add_argument("--components", type=int, default=256, help="principal components of the features kept")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    setup_logging()

    import torch

    from lavid.data.clips import DatasetFormatError
    from lavid.data.eval_data import load_split
    from lavid.metrics.latent_evals import by_task, conditional_probes, encode_clips, poses_and_actions
    from lavid.metrics.probe import mlp_probe
    from lavid.training.runs import RunError, load_run

    try:
        loaded = load_run(args.checkpoint, "cpu")
        model, config = loaded.model.eval(), loaded.config
        if model.action_conditioned or model.idm is None:
            raise RunError(f"{args.checkpoint} has no inferred latent to probe")
    except (RunError, DatasetFormatError) as error:
        return fail(error)
    tubelet = config.model.encoder.tubelet

    @torch.no_grad()
    def split(name: str, count: int):
        clips = load_split(config.data, name, count, seed=config.seed, states=True)
        states, _ = encode_clips(model, clips.frames)
        pairs = torch.cat([states[:, :-1].flatten(2), states[:, 1:].flatten(2)], dim=2)  # [B, S-1, 2·N·D]
        return (by_task(clips, tubelet, model.infer_latents(states)[0].cpu()),
                by_task(clips, tubelet, pairs.cpu()), poses_and_actions(clips, tubelet))

    fit_z, fit_features, fit_poses = split("train", args.train_clips)
    test_z, test_features, test_poses = split("heldout", args.clips)
    conditional = conditional_probes(fit_z, test_z, fit_poses, test_poses, seed=config.seed)
    result: dict[str, dict[str, float]] = {}
    for task in sorted(set(conditional)):
        (z, actions), (z_test, actions_test) = fit_z[task], test_z[task]
        x, x_test = fit_features[task][0].float(), test_features[task][0].float()
        mean = x.mean(0)
        _, _, basis = torch.pca_lowrank(x - mean, q=min(args.components, x.shape[1], len(x) // 4), center=False)
        row = {"z": mlp_probe(z, actions, z_test, actions_test, seed=config.seed)["r2_mean"],
               "z_pose": conditional[task]["z_pose_mlp"],
               "features": mlp_probe((x - mean) @ basis, actions, (x_test - mean) @ basis, actions_test,
                                     seed=config.seed)["r2_mean"],
               "poses": mlp_probe(fit_poses[task][0].float(), actions, test_poses[task][0].float(), actions_test,
                                  seed=config.seed)["r2_mean"],
               "train": len(z), "heldout": len(z_test)}
        result[task] = row
        print(task, {k: round(v, 3) for k, v in row.items()}, flush=True)
    if not result:
        return fail(DatasetFormatError(f"the data of {args.checkpoint} has no task with actions and stored simulator "
                                       "states on both sides of its split: nothing to probe"))
    lines = ["| task | transitions (train / held out) | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for task, row in result.items():
        lines.append(f"| {task} | {row['train']} / {row['heldout']} | "
                     + " | ".join(f"{row[k]:.3f}" for k, _ in COLUMNS) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "action_sources.md").write_text("\n".join(lines) + "\n")
    (out / "action_sources.json").write_text(json.dumps(result, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
