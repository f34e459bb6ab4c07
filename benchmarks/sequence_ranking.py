"""Does the world model rank action sequences the way the simulator does? The planner's-eye check of the dynamics.

The cost gate (``benchmarks/cost_gate.py``) asks whether the features rank *states* by their distance to the
goal; the feature oracle asks it with the simulator's dynamics. This asks it of the world model's own
imagination, without the planner's search: for each of the anchors' start / goal pairs (drawn from the
held-out episodes as ``evals/plan.py`` draws them), ``K`` uniform random action sequences of the goal's
offset plus the stored actions that reached the goal, each

- imagined by the world model from the start image and costed as the planner costs it (the L2 distance of the
  last imagined state to the goal image's, :class:`lavid.planning.mpc.GoalCost`), and
- rolled out in MuJoCo from the true start state and scored by the true joint distance to the goal's
  (:class:`lavid.planning.simulator_model.SimulatorCost`).

Columns, averaged over pairs:

- ``Spearman``: rank correlation of the two costs over the candidates (1: the model orders candidates as
  the simulator does; a CEM that follows it goes where the simulator would);
- ``stored rank``: where the stored (goal-reaching) sequence falls in the model's order, as a share of the
  candidates (0: the model thinks it is the best of all; 0.5: no better than a random one);
- ``chosen / best``: the true distance of the model's cheapest candidate, and the best any candidate reaches
  (what a planner that trusted this model would get from one round of ``K`` samples, against a perfect one);
- ``chosen ≤ 0.05 rad``: share of pairs where the model's cheapest random candidate ends with every joint
  within LeWorldModel's success radius of the goal.

``--context 2`` gives the model the stored frame before the start and the action taken from it (what the
planner sees from its second plan on: the velocity, which one image does not show); pairs that start at
an episode's first step are then left out.

Usage:
    python benchmarks/sequence_ranking.py --heldout OUT/heldout --runs RUN [RUN ...] [--pairs 50]
        [--candidates 300] [--goal-offset 5] [--context 1|2] [--task reacher-easy] [--action-repeat 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lavid.planning.cost_ranking import spearman


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", required=True, help="held-out trajectories (evals/plan.py's OUT/heldout)")
    parser.add_argument("--runs", nargs="+", required=True, help="trained model.condition=action runs")
    parser.add_argument("--task", default="reacher-easy")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--goal-offset", type=int, default=5)
    parser.add_argument("--action-repeat", type=int, default=10)
    parser.add_argument("--context", type=int, default=1, choices=(1, 2))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from lavid.planning.dynamics import ActionDynamics
    from lavid.planning.mpc import GoalCost
    from lavid.planning.reaching import draw_pairs, start_envs
    from lavid.planning.simulator_model import SimulatorCost
    from lavid.training.runs import load_run

    pairs = draw_pairs(args.heldout, args.task, args.pairs, args.goal_offset, seed=args.seed)
    frames, past_actions = _context(args.heldout, pairs, args.context)
    keep = np.flatnonzero([f is not None for f in frames])
    if len(keep) < len(pairs):
        pairs = _subset(pairs, keep)
        frames, past_actions = [frames[i] for i in keep], [past_actions[i] for i in keep]
    envs = start_envs(pairs, args.action_repeat)
    low, high = envs[0].action_low, envs[0].action_high
    generator = torch.Generator().manual_seed(args.seed)
    count, steps, action_dim = len(pairs), args.goal_offset, len(low)
    uniform = torch.rand(count, args.candidates, steps, action_dim, generator=generator)
    candidates = torch.as_tensor(low) + uniform * torch.as_tensor(high - low)
    stored = torch.as_tensor(pairs.oracle_actions, dtype=torch.float32)[:, None]  # [E, 1, H, A]
    candidates = torch.cat([stored, candidates.float()], dim=1)  # candidate 0: the stored sequence
    episodes = torch.arange(count)
    true = SimulatorCost(envs, pairs.goal_qpos)(candidates, episodes).numpy()  # [E, 1 + K] joint distance
    qpos_error = _max_joint_error(envs, pairs.goal_qpos, candidates)
    for env in envs:
        env.close()
    print(f"{args.task}: {count} pairs, goal {steps} stored steps ahead, {args.candidates} uniform random sequences "
          f"+ the stored one a pair, context {args.context}; the stored sequence's true distance {true[:, 0].mean():.4f} (0 up to float "
          f"error), the random ones' median {np.median(true[:, 1:]):.3f}, best {true[:, 1:].min(1).mean():.3f}\n")
    print("| run | Spearman | stored rank | chosen / best true distance | chosen ≤ 0.05 rad | s |")
    print("|---|---:|---:|---|---:|---:|")
    for run in args.runs:
        start = time.perf_counter()
        model = load_run(run).model.eval()
        dynamics = ActionDynamics(model, None, action_dim)
        context = dynamics.encode(torch.from_numpy(np.stack(frames)))
        goals = dynamics.encode(torch.from_numpy(pairs.goal_frames)[:, None])[:, 0]
        past = dynamics.observed_conditions(context, torch.from_numpy(np.stack(past_actions)))
        cost = GoalCost(dynamics, context, past, goals, chunk=300)
        model_cost = torch.cat([cost(candidates[i:i + 1], episodes[i:i + 1]) for i in range(count)]).numpy()
        rho = np.nanmean([spearman(m[1:], t[1:]) for m, t in zip(model_cost, true)])
        rank = np.mean([(m[1:] < m[0]).mean() for m in model_cost])
        chosen = 1 + model_cost[:, 1:].argmin(1)
        chosen_true = true[np.arange(count), chosen]
        success = (qpos_error[np.arange(count), chosen] < 0.05).mean()
        print(f"| {run} | {rho:.3f} | {rank:.3f} | {chosen_true.mean():.3f} / {true[:, 1:].min(1).mean():.3f} | "
              f"{success:.2f} | {time.perf_counter() - start:.0f} |", flush=True)
    return 0


def _context(root, pairs, steps: int) -> tuple[list, list]:
    """Per pair: the ``steps`` stored frames ending at the start ``[steps, 3, H, W]`` and the actions between them
    ``[steps - 1, A]``; ``(None, None)`` where the start is too early in its episode."""
    from lavid.data.goals import read_episode

    if steps == 1:
        return [f[None] for f in pairs.start_frames], [np.zeros((0, pairs.oracle_actions.shape[-1]), np.float32)] * len(pairs)
    frames, actions = [], []
    for e, start in zip(pairs.episodes, pairs.start_physics):
        episode = read_episode(root, int(e))
        t = int(np.flatnonzero((episode.physics == start).all(1))[0])
        ok = t >= steps - 1
        frames.append(episode.frames[t - steps + 1:t + 1] if ok else None)
        actions.append(episode.actions[t - steps + 1:t] if ok else None)
    return frames, actions


def _subset(pairs, keep: np.ndarray):
    """The pairs ``keep`` of a :class:`lavid.planning.reaching.GoalSet`."""
    import dataclasses

    return dataclasses.replace(pairs, **{f.name: getattr(pairs, f.name)[keep] for f in dataclasses.fields(pairs)
                                         if isinstance(getattr(pairs, f.name), np.ndarray)})


def _max_joint_error(envs, goal_qpos: np.ndarray, candidates: torch.Tensor) -> np.ndarray:
    """``[E, K]`` the largest joint error to the goal after each candidate's last step (success's measure)."""
    import mujoco
    from mujoco import rollout

    out = []
    for env, goal, sequences in zip(envs, goal_qpos, candidates.numpy().astype(np.float64)):
        model = env.physics.model.ptr
        kind = mujoco.mjtState.mjSTATE_FULLPHYSICS
        state = np.zeros(mujoco.mj_stateSize(model, kind))
        mujoco.mj_getState(model, env.physics.data.ptr, state, kind)
        control = np.clip(sequences, env.action_low, env.action_high).repeat(env.action_repeat, axis=1)
        states, _ = rollout.rollout(model, mujoco.MjData(model), np.tile(state, (len(control), 1)), control)
        out.append(np.abs(states[:, -1, 1:1 + model.nq] - goal).max(-1))
    return np.stack(out)


if __name__ == "__main__":
    raise SystemExit(main())
