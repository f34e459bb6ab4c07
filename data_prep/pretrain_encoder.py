"""MAE-pretrain the frame encoder of a training config on its data, for a meaningful encoder offline.

Usage:
    python data_prep/pretrain_encoder.py --out checkpoints/mae_tiny.pth [--steps 300] [key=value ...]
    accelerate launch lavid/train.py model.encoder.checkpoint=checkpoints/mae_tiny.pth model.encoder.mode=frozen
"""

from __future__ import annotations

import argparse
import sys

from lavid.core.cli import add_config_arguments, clean_exit, load_config_from_args, parse_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where to save the encoder (timm state dict)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-progress", action="store_true")
    add_config_arguments(parser)
    args = parse_cli(parser, argv)
    from lavid.core.config import from_dict
    from lavid.data.clips import DatasetFormatError
    from lavid.data.training_data import ensure_default_data
    from lavid.models.mae import MAEConfig
    from lavid.training.pretrain_mae import pretrain_encoder
    from lavid.training.train_config import TrainConfig

    with clean_exit(DatasetFormatError, ValueError):
        config = load_config_from_args(args, TrainConfig)
        mae = from_dict(MAEConfig, {"steps": args.steps, "mask_ratio": args.mask_ratio, "lr": args.lr,
                                    "batch_size": args.batch_size})
        ensure_default_data(config.data)
        summary = pretrain_encoder(config, mae, args.out, progress=not args.no_progress)
    print(f"MAE loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f} over {summary['steps']} steps; "
          f"encoder saved to {summary['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
