"""Throughput and peak memory of the default training job, and the feature cache's speed-up.

1. The default job (configs/tiny.yaml: EMA-finetuned encoder) for a few steps: clips/s as logged in
   metrics.jsonl, and the peak resident memory of the training process (ru_maxrss of the largest child).
2. Frozen encoder, frames (encoding on the fly) vs a feature cache made by data_prep/encode.py: clips/s
   of each, side by side in this run. (The cache's one-off encoding time is printed too.)

Usage:
    python benchmarks/train.py [--steps 40] [--data data/mix] [--only-cache] [KEY=VALUE ...]

Trailing ``KEY=VALUE`` overrides apply to every job (e.g. the planning preset's predictor and a frozen encoder
from another run: ``model.encoder.checkpoint=RUN model.encoder.state_norm=raw``); ``--only-cache`` skips part 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_job(args: list[str]) -> tuple[float, float]:
    """Run lavid/train.py in a child; returns (clips/s at the last logged step, peak RSS GiB of any child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, str(ROOT / "lavid" / "train.py"), *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
    out = next(a.split("=", 1)[1] for a in args if a.startswith("out_dir="))
    rows = [json.loads(line) for line in open(Path(out) / "metrics.jsonl") if '"clips_per_s"' in line]
    return rows[-1]["clips_per_s"], peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data", default="data/mix")
    parser.add_argument("--only-cache", action="store_true", help="skip the default job (part 1)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides of every job")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lavid-bench-train-"))
    common = [f"data.data={args.data}", f"steps={args.steps}", "eval_every=0", "checkpoint_every=0",
              "progress=false", f"log_every={args.steps}", *args.overrides]
    try:
        if not args.only_cache:
            clips, peak = run_job([*common, f"out_dir={work / 'default'}"])
            print(f"default job (tiny.yaml, EMA encoder), {args.steps} steps: {clips:.2f} clips/s, "
                  f"peak RSS {peak:.2f} GiB")
        frozen = [*common, "model.encoder.mode=frozen"]
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "data_prep" / "encode.py"), "--out", str(work / "cache"),
                        "--no-progress", *frozen], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        encode_seconds = time.perf_counter() - start
        on_the_fly, _ = run_job([*frozen, f"out_dir={work / 'frames'}"])
        cached, _ = run_job([*frozen, f"out_dir={work / 'features'}", f"data.features={work / 'cache'}"])
        print(f"| frozen encoder | clips/s |\n|---|---|\n| encoding on the fly | {on_the_fly:.2f} |\n"
              f"| feature cache | {cached:.2f} |\n| speed-up | {cached / on_the_fly:.2f}x |")
        print(f"(building the cache took {encode_seconds:.0f} s, once)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
