"""The cost-ranking gate three ways: what it measured before and what the planner faces.

For each goal of the anchors' pairs (drawn from the held-out episodes as ``evals/plan.py`` draws them), the
Spearman correlation between a feature distance to the goal image and the true joint distance, averaged
over goals (:mod:`lavid.planning.cost_ranking`):

- ``raw, every episode``: raw joint differences, states from every held-out episode (the first version);
- ``wrapped, every episode``: angle differences wrapped into (−π, π];
- ``wrapped, goal's episode``: wrapped, and only states of the goal's own episode (its scene: reacher's
  target), the gate ``evals/plan.py`` prints.

Rows: raw pixels, and each given run's encoder.

Usage:
    python benchmarks/cost_gate.py --heldout OUT/heldout [--runs RUN ...] [--task reacher-easy] [--pairs 50]
        [--goal-offset 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lavid.planning.cost_ranking import angle_distance, cost_spearman, heldout_states, spearman
from lavid.planning.reaching import draw_pairs


def raw_spearman(encode, frames, qpos, goal_frames, goal_qpos) -> float:
    """The first version: raw joint differences, every held-out state."""
    with torch.no_grad():
        states = encode(torch.from_numpy(frames)[:, None])[:, 0].flatten(1).double()
        goals = encode(torch.from_numpy(goal_frames)[:, None])[:, 0].flatten(1).double()
    feature = torch.cdist(goals, states).numpy()
    true = np.linalg.norm(goal_qpos[:, None] - qpos[None], axis=-1)
    return float(np.nanmean([spearman(f, t) for f, t in zip(feature, true)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", required=True, help="held-out trajectories (evals/plan.py's OUT/heldout)")
    parser.add_argument("--runs", nargs="*", default=[], help="trained runs whose encoders to rank with")
    parser.add_argument("--task", default="reacher-easy")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--goal-offset", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from lavid.training.runs import load_run

    pairs = draw_pairs(args.heldout, args.task, args.pairs, args.goal_offset, seed=args.seed)
    nq = pairs.goal_qpos.shape[1]
    frames, qpos, groups = heldout_states(args.heldout, nq)
    encoders = {"raw pixels": lambda f: f.float().flatten(2)}
    for run in args.runs:
        model = load_run(run).model.eval()
        encoders[run] = model.encode
    print(f"{args.task}: {len(frames)} held-out states in {groups.max() + 1} episodes, {args.pairs} goals; largest "
          f"|joint| {np.abs(qpos).max():.2f} rad; wrapped vs raw distance disagree on "
          f"{np.mean(np.abs(angle_distance(qpos[:200, None], qpos[None, :200]) - np.linalg.norm(qpos[:200, None] - qpos[None, :200], axis=-1)) > 1e-6):.0%}"
          " of state pairs\n")
    print("| features | raw, every episode | wrapped, every episode | wrapped, goal's episode (the gate) |")
    print("|---|---:|---:|---:|")
    for name, encode in encoders.items():
        raw = raw_spearman(encode, frames, qpos, pairs.goal_frames, pairs.goal_qpos)
        wrapped = cost_spearman(encode, frames, qpos, pairs.goal_frames, pairs.goal_qpos)
        gate = cost_spearman(encode, frames, qpos, pairs.goal_frames, pairs.goal_qpos, groups, pairs.episodes)
        print(f"| {name} | {raw:.3f} | {wrapped:.3f} | {gate:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
