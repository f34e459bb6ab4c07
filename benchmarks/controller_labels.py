"""How well a controller stands in for the IDM, against labeled transitions and its loss.

For a trained latent-action run, fits the controller (:func:`lavid.planning.fit_controller.train_controller`)
once per (labeled fraction, prediction weight) and prints, on the run's held-out episodes: the latent R²
against the IDM's z, the one-step and the rollout error with its latents ÷ with the IDM's (the reference
paper's ×1.00–×1.5 for the rollout), and the action gain (rollout error with actions rolled across the batch
÷ with the right ones). Prediction weight 0 is the plain controller (L2 to the IDM's latents); W > 0 adds the
one-step prediction loss through the frozen world model.

Usage:
    python benchmarks/controller_labels.py --run RUN [--fractions 0.1 1.0] [--weights 0 1] [--steps 1500]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a trained latent-action run (lavid/train.py's out_dir)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="where the controllers go (default RUN/controllers)")
    args = parser.parse_args(argv)
    import torch

    from lavid.core.threads import usable_cores
    from lavid.planning.fit_controller import ControllerTrainConfig, train_controller

    torch.set_num_threads(usable_cores())
    out = Path(args.out or Path(args.run) / "controllers")
    print(f"run {args.run}; attention controller, {args.steps} steps, seed {args.seed}; held-out episodes of the run\n")
    print("| labeled fraction | labeled transitions | prediction weight | latent R² | one-step ÷ IDM | rollout ÷ IDM "
          "| action gain | s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fraction in args.fractions:
        for weight in args.weights:
            start = time.time()
            summary = train_controller(ControllerTrainConfig(
                run=args.run, out_dir=str(out / f"f{fraction:g}_w{weight:g}"), labeled_fraction=fraction,
                steps=args.steps, prediction_weight=weight, seed=args.seed, progress=False))
            print(f"| {fraction:g} | {summary['labeled_transitions']:,} | {weight:g} | {summary['latent_r2']:.2f} "
                  f"| {summary['one_step_ratio']:.3f} | {summary['rollout_ratio']:.2f} | {summary['action_gain']:.2f} "
                  f"| {time.time() - start:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
