"""Encode a dataset's clips once with the (frozen) encoder of a training config.

Usage:
    python data_prep/encode.py --config configs/tiny.yaml --out data/mix-features model.encoder.mode=frozen
    python lavid/train.py model.encoder.mode=frozen data.features=data/mix-features

The encoder is initialized exactly as lavid/train.py does (same seed, checkpoint and sizes); training
refuses a cache whose encoder fingerprint differs, or that was made with another data.frame_stride.
When every dataset has actions, each clip's actions are stored too (padded to one size), so
model.condition=action can train from the cache.
"""

from __future__ import annotations

import argparse
import sys

from lavid.core.cli import add_config_arguments, clean_exit, load_config_from_args, parse_cli, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder of the feature cache")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one, the default), cpu, cuda, cuda:N")
    parser.add_argument("--no-progress", action="store_true")
    add_config_arguments(parser)
    args = parse_cli(parser, argv)
    from lavid.data.clips import DatasetFormatError
    from lavid.data.store import StoreError
    from lavid.training.feature_cache import build_feature_cache
    from lavid.training.train_config import TrainConfig

    with clean_exit(DatasetFormatError, StoreError, ValueError):
        config = load_config_from_args(args, TrainConfig)
        device = resolve_device(args.device)  # a device torch cannot use here stops before any work
        meta = build_feature_cache(config, args.out, args.batch_size, device, progress=not args.no_progress)
    actions = f", actions of {meta['action_dim']} per frame" if meta["action_dim"] else ""
    print(f"encoded {meta['counts']['clips']} clips -> {args.out} (features {meta['shape']}{actions}, "
          f"encoder {meta['encoder']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
