"""Frames per second the DataLoader delivers (0, 1, 2 workers) vs raw sequential decord decoding.

The limit is the same clips decoded one after another with decord in one process (what one core can
do); the goal is >= 0.8x that limit with 2 workers. Videos are generated here (H.264, 640x360, 30 fps).

Usage:
    python benchmarks/loader.py [--videos 12] [--seconds 8] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def conftest_module():
    """tests/conftest.py (its ``write_video`` makes the videos), loaded from its file: tests/ is no package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lavid_test_helpers", TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def raw_decode(dataset) -> int:
    """Decode every clip sequentially with decord, no loader: the limit."""
    from lavid.data.video import decode_clip

    frames = 0
    for index in range(len(dataset)):
        clip = dataset.clips[index]
        out = decode_clip(str(clip["source"]), float(clip["start"]), int(clip["num_frames"]), float(clip["fps"]),
                          dataset.size, backend="decord")
        frames += len(out)
    return frames


def loader_pass(dataset, workers: int, batch_size: int) -> int:
    from lavid.data.clips import make_loader

    loader = make_loader(dataset, batch_size, seed=0, num_workers=workers, drop_last=False)
    frames = 0
    for batch in loader:
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]
    return frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    write_video = conftest_module().write_video
    from lavid.data.clips import ClipDataset
    from lavid.data.video_index import VideoIndexConfig, build_video_dataset

    root = Path(args.out or tempfile.mkdtemp(prefix="lavid-bench-"))
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for k in range(args.videos):
        path = root / "videos" / f"v{k:03d}.mp4"
        if not path.exists():
            write_video(path, fps=30, num_frames=30 * args.seconds, width=640, height=360)
    index = root / "index"
    build_video_dataset(root / "videos", index, VideoIndexConfig(fps=4, clip_len=8, size=64), progress=False)
    dataset = ClipDataset(index)
    print(f"{len(dataset)} clips of 8 frames from {args.videos} videos (640x360 H.264 30 fps -> 4 fps, 64x64)")

    rows = {"raw decord, sequential": lambda: raw_decode(dataset)}
    for workers in (0, 1, 2):
        rows[f"DataLoader, {workers} workers"] = lambda w=workers: loader_pass(dataset, w, args.batch_size)
    timings: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):  # interleave so machine noise hits every row alike
        for name, run in rows.items():
            start = time.perf_counter()
            frames = run()
            timings[name].append(frames / (time.perf_counter() - start))
    limit = statistics.median(timings["raw decord, sequential"])
    print(f"| path | frames/s (median of {args.repeats}) | x limit |")
    print("|---|---|---|")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {median / limit:.2f} |")


if __name__ == "__main__":
    main()
