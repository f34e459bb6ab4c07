"""Train a state-based SAC agent on a DMControl task: the policies and replay data behind offline-RL datasets.

Usage:
    python data_prep/train_expert.py --task walker-walk --steps 100000 --out agents/walker
    python data_prep/dmc.py --task walker-walk --policy checkpoint:agents/walker/medium.pt --episodes 50 \\
        --out data/walker_medium

Writes to OUT: ``medium.pt`` / ``expert.pt`` (the first policies whose evaluation return reaches
``--milestones``), ``final.pt``, ``policies/step_N.pt`` at every evaluation, ``replay.npz`` (every
transition with its physics state, for medium-replay data), ``log.csv``, ``returns.png`` and
``summary.json``. The policies are TorchScript ``state [S] -> action [A]`` for ``--policy checkpoint:PATH``.
A killed run resumes from its last evaluation when started again with the same OUT.
"""

from __future__ import annotations

import argparse
import sys

from lavid.core.cli import fail, resolve_device, setup_logging


def milestones(text: str) -> dict[str, float]:
    """``medium=400,expert=900`` -> {"medium": 400.0, "expert": 900.0}; empty text: none."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"milestone {part!r} is not NAME=RETURN")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help="domain-task, e.g. walker-walk (python data_prep/dmc.py --list-tasks)")
    parser.add_argument("--out", required=True, help="output folder (resumed when it holds a run)")
    parser.add_argument("--steps", type=int, default=100_000, help="environment steps (default 100000)")
    parser.add_argument("--action-repeat", type=int, default=2, help="control steps per action (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=10_000, help="steps between evaluations (default 10000)")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--milestones", type=milestones, default=milestones("medium=400,expert=900"),
                        help="NAME=RETURN,...: save the first policy reaching each (default medium=400,expert=900)")
    parser.add_argument("--seed-steps", type=int, default=2_000, help="random-action steps before learning")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--device", default="auto", help="where SAC trains: auto (cuda when there is one), cpu, "
                                                       "cuda, cuda:N; the simulator steps on the CPU")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from lavid.offline_rl.expert import ExpertConfig, train_expert
    from lavid.offline_rl.sac import SACConfig
    from lavid.data.sim import SimError

    try:
        config = ExpertConfig(
            task=args.task, out=args.out, steps=args.steps, action_repeat=args.action_repeat, seed=args.seed,
            eval_every=args.eval_every, eval_episodes=args.eval_episodes, milestones=args.milestones,
            device=resolve_device(args.device),
            sac=SACConfig(hidden=args.hidden, lr=args.lr, batch_size=args.batch_size, seed_steps=args.seed_steps),
        )
        config.validate()
        summary = train_expert(config, progress=not args.no_progress)
    except (SimError, ValueError) as error:
        return fail(error)
    reached = ", ".join(f"{k} at step {v['step']} ({v['eval_return']:.0f})" for k, v in summary["milestones"].items())
    print(f"{args.task}: final evaluation return {summary['final_eval_return']:.1f} after {summary['steps']} steps "
          f"({summary['wall_s']:.0f} s); milestones: {reached or 'none'}"
          + (f"; not reached: {', '.join(summary['missed'])}" if summary["missed"] else "") + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
