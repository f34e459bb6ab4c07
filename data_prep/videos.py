"""Index a folder / list / dataset of videos into a lavid clip dataset.

Usage:
    python data_prep/videos.py SRC OUT [--fps 4] [--clip-len 16] [--stride N] [--size 64]
                                       [--workers 2] [--materialize] [--overwrite]

Every video is probed; each one that cannot be used (corrupt, empty, too short, not a video,
unreadable) is listed with its reason in OUT/skipped.jsonl and counted in the summary line. Killed
halfway, a rerun continues where it stopped; a rerun on a finished OUT does nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lavid.core.cli import fail, setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="folder (recursive), .csv/.txt list of paths, saved datasets folder, or hub name")
    parser.add_argument("out", help="output dataset folder")
    parser.add_argument("--fps", type=float, default=4.0, help="clip frame rate; 0 keeps each video's own (default 4)")
    parser.add_argument("--clip-len", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--stride", type=int, default=None, help="frames between clip starts (default: clip-len)")
    parser.add_argument("--size", type=int, default=64, help="square frame side after resize+crop (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (0: none; default 2)")
    parser.add_argument("--materialize", action="store_true", help="store decoded uint8 frames, not just the index")
    parser.add_argument("--split", default="train", help="split of a dataset source (default train)")
    parser.add_argument("--chunk-items", type=int, default=64, help="videos per committed chunk (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="discard what OUT holds and start again")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from lavid.data.sources import SourceError
    from lavid.data.store import StoreError
    from lavid.data.video_index import VideoIndexConfig, build_video_dataset, skip_summary

    try:
        config = VideoIndexConfig(args.fps, args.clip_len, args.stride, args.size, args.materialize)
        if args.chunk_items < 1:
            raise ValueError(f"--chunk-items must be >= 1, got {args.chunk_items}")
        meta = build_video_dataset(
            args.src, args.out, config, workers=args.workers, overwrite=args.overwrite, split=args.split,
            chunk_items=args.chunk_items, progress=not args.no_progress,
        )
    except (SourceError, StoreError, ValueError) as error:
        return fail(error)
    counts = meta["counts"]
    reasons = skip_summary(args.out)
    detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items()))
    prefix = "already complete; " if meta.get("already_complete") else ""
    print(
        f"{prefix}videos: {counts['items']}, indexed: {counts['episodes']}, clips: {counts['clips']}, "
        f"skipped: {counts['skipped']}" + (f" ({detail})" if detail else "") + f" -> {args.out}"
    )
    if counts["skipped"]:
        print(f"skip report: {Path(args.out) / 'skipped.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
