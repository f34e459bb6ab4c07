"""Collect DMControl or Jaco-arm trajectories (frames, actions, rewards, states) into a lavid dataset.

Usage:
    python data_prep/dmc.py --task walker-walk --policy smooth --episodes 10 --out data/walker
    python data_prep/dmc.py --task jaco-reach --policy smooth --episodes 2 --out data/jaco
    python data_prep/dmc.py --preset mix --out data/mix        # the mixed-embodiment default

Tasks are DMControl suite ``domain-task`` names or ``jaco-reach``; policies are ``random``,
``smooth`` or ``checkpoint:PATH[@NOISE]`` (a TorchScript agent, e.g. from
``data_prep/train_expert.py``, acting with Gaussian noise). Resumable per episode after a kill; a rerun
on a finished OUT does nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from lavid.core.cli import fail, setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", help="domain-task (e.g. walker-walk) or jaco-reach; --list-tasks shows all")
    what.add_argument("--preset", choices=["mix"], help="a predefined multi-task dataset")
    what.add_argument("--list-tasks", action="store_true", help="print the valid task names and exit")
    parser.add_argument("--out", help="output dataset folder")
    parser.add_argument("--policy", default="smooth",
                        help="random | smooth | checkpoint:PATH[@NOISE] (a TorchScript agent, e.g. from data_prep/train_expert.py, with Gaussian noise of NOISE × half the action range; default smooth; a preset sets its own per task)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to collect (default 10)")
    parser.add_argument("--episode-len", type=int, default=None, help="stored steps per episode (default: task's)")
    parser.add_argument("--camera", default=None, help="camera index or name (default 0; front_close for jaco; jaco also has the overview view of lavid.data.sim.VIEWS)")
    parser.add_argument("--size", type=int, default=64, help="rendered frame side (default 64)")
    parser.add_argument("--action-repeat", type=int, default=None,
                        help="control steps per action (default 2; for --preset its own per task, which this replaces)")
    parser.add_argument("--clip-len", type=int, default=16, help="steps per clip (default 16)")
    parser.add_argument("--stride", type=int, default=None, help="steps between clip starts (default clip-len; 2 for --preset mix)")
    parser.add_argument("--workers", type=int, default=2, help="parallel simulator processes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="discard what OUT holds and start again")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.list_tasks and not args.out:
        parser.error("--out is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from lavid.data.policies import PolicyError
    from lavid.data.sim import SimError, ensure_renderer, task_names
    from lavid.data.store import StoreError
    from lavid.data.trajectories import PRESET_ACTION_REPEAT, PRESET_CLIP_STRIDE, PRESETS, TaskSpec, TrajectoryConfig, build_trajectory_dataset

    if args.list_tasks:
        print("\n".join(task_names()))
        return 0
    try:
        ensure_renderer()  # before anything imports dm_control: it fixes the GL backend at import
        action_repeat, stride = args.action_repeat, args.stride
        if args.preset:
            tasks = PRESETS[args.preset]
            if action_repeat is None:
                action_repeat = PRESET_ACTION_REPEAT[args.preset]
            else:  # asked for on the command line: every task of the preset uses it
                tasks = tuple(dataclasses.replace(spec, action_repeat=None) for spec in tasks)
            stride = PRESET_CLIP_STRIDE[args.preset] if stride is None else stride
        else:
            tasks = (TaskSpec(args.task, args.episodes, camera=args.camera, episode_len=args.episode_len),)
        config = TrajectoryConfig(tasks, policy=args.policy, size=args.size, action_repeat=2 if action_repeat is None else action_repeat,
                                  clip_len=args.clip_len, stride=stride, seed=args.seed)
        meta = build_trajectory_dataset(args.out, config, workers=args.workers, overwrite=args.overwrite,
                                        progress=not args.no_progress)
    except (SimError, PolicyError, StoreError, ValueError) as error:
        return fail(error)
    counts = meta["counts"]
    prefix = "already complete; " if meta.get("already_complete") else ""
    print(f"{prefix}episodes: {counts['episodes']}, frames: {counts['steps']}, clips: {counts['clips']}, "
          f"failed: {counts['skipped']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
