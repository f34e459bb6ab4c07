"""Frames per second written by data_prep/dmc.py with 1 and 2 workers vs the bare render cost.

The limit is one process doing nothing but render 64x64 frames (median of single-render timings);
with W workers the ideal is W x that. Generation includes physics, policy, process start-up and
writing the dataset.

Usage:
    python benchmarks/dmc.py [--frames 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time


def bare_render_fps(task: str, size: int, samples: int = 60) -> float:
    from lavid.data.sim import SimEnv

    env = SimEnv(task, seed=0, size=size)
    env.reset()
    env.render()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        env.render()
        times.append(time.perf_counter() - start)
    env.close()
    return 1.0 / statistics.median(times)


def generation_fps(task: str, size: int, frames: int, workers: int) -> float:
    from lavid.data.trajectories import TaskSpec, TrajectoryConfig, build_trajectory_dataset

    episodes = 4
    config = TrajectoryConfig((TaskSpec(task, episodes, episode_len=frames // episodes),), size=size)
    out = tempfile.mkdtemp(prefix="lavid-bench-dmc-")
    try:
        start = time.perf_counter()
        meta = build_trajectory_dataset(out, config, workers=workers, progress=False)
        return meta["counts"]["steps"] / (time.perf_counter() - start)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    from lavid.data.sim import ensure_renderer

    print(f"MUJOCO_GL={ensure_renderer()}, {os.cpu_count()} cores, {args.frames} frames per run, {args.size}px")
    print("| task | bare render (frames/s, 1 process) | 1 worker | 2 workers | 2 workers / bare |")
    print("|---|---|---|---|---|")
    for task in ("walker-walk", "jaco-reach"):
        limit = bare_render_fps(task, args.size)
        runs = {1: [], 2: []}
        for _ in range(args.repeats):
            for workers in (1, 2):
                runs[workers].append(generation_fps(task, args.size, args.frames, workers))
        one, two = statistics.median(runs[1]), statistics.median(runs[2])
        print(f"| {task} | {limit:.1f} | {one:.1f} | {two:.1f} | {two / limit:.2f} |")


if __name__ == "__main__":
    main()
