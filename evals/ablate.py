"""Compare latent-action regularizers over a capacity sweep, on the same data, budget and seed.

    python evals/ablate.py                                   # smoke budget, default data, all families
    python evals/ablate.py --budget small --families noisy,discrete --out runs/ablate-small
    python evals/ablate.py --values noisy=1e-3,1e-4 --jobs 2
    python evals/ablate.py --budget paper --config configs/paper.yaml \
        --launcher "accelerate launch --multi_gpu --num_processes 8"

Writes results.md, results.csv, results.json and plots/*.png into --out. Rerunning the same command
finishes an interrupted sweep: finished runs and evals are not redone.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from lavid.core.cli import add_config_arguments, clean_exit, parse_cli
from lavid.experiments.presets import preset_names


def main(argv: list[str] | None = None) -> int:
    from lavid.models.latents import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/ablate", help="output folder (default runs/ablate)")
    parser.add_argument("--budget", default="smoke",
                        help=f"a preset of configs/experiments/ablate/ ({', '.join(preset_names('ablate'))}; smoke: "
                             "<= 30 min on 2 CPU cores, small: one GPU, paper: the paper's sweep) or a YAML file")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default: all)")
    parser.add_argument("--values", action="append", default=[], metavar="FAMILY=V1,V2",
                        help="replace a family's swept values, e.g. noisy=1e-3,1e-5 or fsq=8x5,8x5x5x5")
    for name, what in (("steps", "optimizer steps per run"), ("mae-steps", "encoder MAE pretraining steps"),
                       ("decoder-steps", "pixel decoder steps"), ("eval-clips", "held-out clips evaluated"),
                       ("probe-clips", "training clips the probe is fit on")):
        parser.add_argument(f"--{name}", type=int, help=f"override the budget's {what}")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (default 1)")
    parser.add_argument("--launcher", default=None,
                        help='prefix for each training process (default: this python), e.g. "accelerate launch"')
    parser.add_argument("--lpips-weights", default=None, help="local torchvision AlexNet weights for LPIPS")
    parser.add_argument("--no-progress", action="store_true")
    add_config_arguments(parser)
    args = parse_cli(parser, argv, intermixed=True)  # key=value overrides may come before or after the options

    from lavid.data.clips import DatasetFormatError
    from lavid.experiments.ablation import load_budget, parse_values, run_sweep

    with clean_exit(DatasetFormatError, ValueError):
        changes = [f"{name}={getattr(args, name)}" for name in ("steps", "mae_steps", "decoder_steps", "eval_clips",
                                                                 "probe_clips") if getattr(args, name) is not None]
        budget = load_budget(args.budget, changes)
        for item in args.values:
            family, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"--values {item!r}: expected FAMILY=V1,V2")
            budget.values[family.strip()] = parse_values(family.strip(), text)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        launcher = shlex.split(args.launcher) if args.launcher else None
        rows = run_sweep(args.config, args.overrides, args.out, budget, families, jobs=args.jobs, launcher=launcher,
                         lpips_weights=args.lpips_weights, progress=not args.no_progress,
                         budget_name=args.budget if not (changes or args.values) else f"{args.budget}, modified")
    failed = [r for r in rows if r["status"] != "done"]
    print(f"{len(rows) - len(failed)} of {len(rows)} runs done; table: {args.out}/results.md, plots: {args.out}/plots/")
    for row in failed:
        print(f"  {row['run']}: {row.get('error', row['status'])}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
