"""Offline RL with latent actions from few labeled and many unlabeled episodes, against its baselines.

Usage:
    python evals/offline_rl.py --task walker-walk --out runs/offline_rl              # smoke budget
    python evals/offline_rl.py --task walker-walk --dataset medium --budget full --out DIR
    python evals/offline_rl.py --task walker-walk --data DIR/agent/replay.npz --out DIR2   # given data

Without ``--data`` it first trains a state-based SAC agent (``data_prep/train_expert.py``) into
``OUT/agent`` and takes the dataset ``--dataset`` from it: ``medium-replay`` (its replay buffer, the
default: no rendering), or ``medium`` / ``expert`` / ``random`` (episodes of its milestone policy, with
exploration noise, or of uniform actions, rolled out by ``data_prep/dmc.py``). For every seed the episodes
are split once (``--labeled-fraction`` keep their actions, the rest lose them) and every method trains on
that split: ``latent`` (the latent-action world model over all episodes + a latent policy learned in its
imagination), ``labeled_only`` (the same on the labeled episodes alone, its model trained for its own
step count, ``--labeled-only-model-steps``: a tenth of the data overfits sooner), ``bc`` (behaviour cloning
on the labeled episodes) and ``random``. Scores are return ÷ 10 over ``--eval-episodes`` simulator episodes.
Writes ``results.md``, ``results.csv``, ``results.json`` (one row per method; md and json also pair
``latent`` with each other method seed by seed: the score differences and on how many seeds it is
ahead), ``runs.jsonl`` (one line per method and seed: a rerun with the same data and settings skips what
is there) and ``curves.png`` (the policies' imagined returns while they learn). ``--score-executions
decoder,idm`` scores each trained latent policy executed each way (``PolicyConfig.execute``) on the same
evaluation episodes, paired by seed in results.md and ``executions`` in results.json. Every model-based
method is also scored with its model's prior mean in place of the actor (``prior, no actor``; paired with the
policy in ``actor_over_prior``). ``--workers`` (default 2 on the CPU, 8 on a GPU) method-seed runs go side by
side, each in its own process with a share of the cores. ``--device`` (default: cuda when there is one) is
where SAC, the models and the policies train; the simulator steps on the CPU. Observations are the
simulator's proprioceptive state.
"""

from __future__ import annotations

import argparse
import sys

from lavid.core.cli import fail, resolve_device, setup_logging
from lavid.experiments.offline_rl import DATASETS
from lavid.experiments.presets import preset_names

BUDGET_FLAGS = ("seeds", "eval_episodes", "model_steps", "labeled_only_model_steps", "policy_steps", "bc_steps",
                "expert_steps", "episodes")
"""The flags that override the budget preset's value of the same name."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="walker-walk", help="DMControl domain-task (default walker-walk)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="medium-replay", choices=DATASETS)
    parser.add_argument("--budget", default="smoke",
                        help=f"a preset of configs/experiments/offline_rl/ ({', '.join(preset_names('offline_rl'))}) or a YAML "
                             "file")
    parser.add_argument("--data", default="", help="use this replay.npz or trajectory dataset (skips the expert)")
    parser.add_argument("--labeled-fraction", type=float, default=0.1, help="episodes that keep their actions")
    parser.add_argument("--methods", default="latent,labeled_only,bc,random")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default: the budget's)")
    parser.add_argument("--eval-episodes", type=int, default=None)
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument("--model-steps", type=int, default=None)
    parser.add_argument("--labeled-only-model-steps", type=int, default=None,
                        help="model steps of labeled_only (default: the budget's, or --model-steps when that is given)")
    parser.add_argument("--policy-steps", type=int, default=None)
    parser.add_argument("--bc-steps", type=int, default=None)
    parser.add_argument("--expert-steps", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None, help="episodes to roll out for medium/expert/random")
    parser.add_argument("--noise", type=float, default=0.2, help="exploration noise of medium/expert rollouts")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="config overrides, e.g. model.beta=1e-4 policy.horizon=10 (sections: model, policy, bc)")
    parser.add_argument("--score-executions", default="", metavar="MODE[,MODE]",
                        help="also score every trained latent policy executed each of these ways (decoder, idm), "
                             "on the same episodes: paired by seed in results.md (default: only policy.execute)")
    parser.add_argument("--workers", type=int, default=None,
                        help="method-seed runs side by side, in separate processes (default: 2 on the CPU, 8 on a "
                             "GPU, at most one per core)")
    parser.add_argument("--device", default="auto",
                        help="where SAC, the models and the policies train: auto (cuda when there is one), cpu, "
                             "cuda, cuda:N; the simulator steps on the CPU")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def budget(args: argparse.Namespace):
    """The ``--budget`` preset with the flags above it given on the command line."""
    from lavid.experiments.offline_rl import OfflineRLBudget
    from lavid.experiments.presets import load_preset

    overrides = [f"{key}={getattr(args, key)}" for key in BUDGET_FLAGS if getattr(args, key) is not None]
    if args.model_steps is not None and args.labeled_only_model_steps is None:
        overrides.append(f"labeled_only_model_steps={args.model_steps}")  # --model-steps alone sets both models'
    return load_preset(OfflineRLBudget, "offline_rl", args.budget, overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from lavid.data.sim import SimError, check_task
    from lavid.experiments.offline_rl import OfflineRLSettings, default_workers, run_offline_rl
    from lavid.offline_rl.offline_data import OfflineDataError

    try:
        check_task(args.task)
        b = budget(args)
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        device = resolve_device(args.device)
        settings = OfflineRLSettings(
            task=args.task, out=args.out, dataset=args.dataset, budget_name=args.budget, data=args.data,
            labeled_fraction=args.labeled_fraction,
            methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), action_repeat=args.action_repeat,
            noise=args.noise, executions=tuple(m.strip() for m in args.score_executions.split(",") if m.strip()),
            workers=args.workers or default_workers(device), device=device, progress=not args.no_progress)
        results = run_offline_rl(settings, b, args.set)
    except (OfflineDataError, SimError, ValueError, RuntimeError) as error:
        return fail(error)
    print(results.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
