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

``--render`` also renders every candidate's true end state and costs it with the same features (the feature
oracle's view of one round of samples): ``Spearman, true frames`` and ``chosen, true frames`` then say how well
the features alone would rank the candidates, so that the gap to the imagined columns is the dynamics' share.

``--context 2`` gives the model the stored frame before the start and the action taken from it (what the
planner sees from its second plan on: the velocity, which one image does not show); pairs that start at
an episode's first step are then left out.

Usage:
    python benchmarks/sequence_ranking.py --heldout OUT/heldout --runs RUN [RUN ...] [--pairs 50]
        [--candidates 300] [--goal-offset 5] [--context 1|2] [--render] [--task reacher-easy] [--action-repeat 10]
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
    parser.add_argument("--render", action="store_true", help="also cost the rendered true end states (slower)")
    parser.add_argument("--render-cache", default="", help="a .npz to keep the rendered end states in (reused when "
                        "it matches the pairs and candidates)")
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
    ends = _end_states(envs, candidates)  # [E, 1 + K, Q + V]
    nq = envs[0].physics.model.nq
    qpos_error = np.abs(ends[..., :nq] - pairs.goal_qpos[:, None]).max(-1)
    rendered = _cached_render(envs, ends, args.render_cache) if args.render else None  # uint8 [E, 1 + K, 3, H, W]
    for env in envs:
        env.close()
    print(f"{args.task}: {count} pairs, goal {steps} stored steps ahead, {args.candidates} uniform random sequences "
          f"+ the stored one a pair, context {args.context}; the stored sequence's true distance {true[:, 0].mean():.4f} (0 up to float "
          f"error), the random ones' median {np.median(true[:, 1:]):.3f}, best {true[:, 1:].min(1).mean():.3f}\n")
    extra = " Spearman, true frames | chosen, true frames |" if args.render else ""
    print(f"| run | Spearman | stored rank | chosen / best true distance | chosen ≤ 0.05 rad |{extra} s |")
    print("|---|---:|---:|---|---:|" + ("---:|---:|" if args.render else "") + "---:|")
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
        cells = ""
        if rendered is not None:  # the same features on the true end frames: the cost without the dynamics
            with torch.no_grad():
                ends_features = torch.stack([dynamics.encode(torch.from_numpy(r)[:, None])[:, 0] for r in rendered])
            frame_cost = (ends_features - goals[:, None]).flatten(2).norm(dim=-1).numpy()  # [E, 1 + K]
            frame_rho = np.nanmean([spearman(f[1:], t[1:]) for f, t in zip(frame_cost, true)])
            frame_chosen = true[np.arange(count), 1 + frame_cost[:, 1:].argmin(1)].mean()
            cells = f" {frame_rho:.3f} | {frame_chosen:.3f} |"
        print(f"| {run} | {rho:.3f} | {rank:.3f} | {chosen_true.mean():.3f} / {true[:, 1:].min(1).mean():.3f} | "
              f"{success:.2f} |{cells} {time.perf_counter() - start:.0f} |", flush=True)
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


def _end_states(envs, candidates: torch.Tensor) -> np.ndarray:
    """``[E, K, Q + V]`` each candidate's end state (joint positions, then velocities) rolled out in MuJoCo
    from each pair's start, at the environments' action repeat."""
    import mujoco
    from mujoco import rollout

    out = []
    for env, sequences in zip(envs, candidates.numpy().astype(np.float64)):
        model = env.physics.model.ptr
        kind = mujoco.mjtState.mjSTATE_FULLPHYSICS
        state = np.zeros(mujoco.mj_stateSize(model, kind))
        mujoco.mj_getState(model, env.physics.data.ptr, state, kind)
        control = np.clip(sequences, env.action_low, env.action_high).repeat(env.action_repeat, axis=1)
        states, _ = rollout.rollout(model, mujoco.MjData(model), np.tile(state, (len(control), 1)), control)
        out.append(states[:, -1, 1:1 + model.nq + model.nv])  # FULLPHYSICS: time, qpos, qvel, ...
    return np.stack(out)


def _cached_render(envs, ends: np.ndarray, cache: str) -> np.ndarray:
    """:func:`_render`, kept in ``cache`` (an ``.npz``) and reused when its end states are these."""
    import os

    if cache and os.path.exists(cache):
        stored = np.load(cache)
        if stored["ends"].shape == ends.shape and np.allclose(stored["ends"], ends):
            return stored["frames"]
        print(f"{cache} holds other end states: rendering again", flush=True)
    frames = _render(envs, ends)
    if cache:
        np.savez(cache, ends=ends, frames=frames)
    return frames


def _render(envs, ends: np.ndarray) -> np.ndarray:
    """uint8 ``[E, K, 3, H, W]``: each end state as the camera sees it (the pair's own scene, target included)."""
    from tqdm.auto import tqdm

    frames = []
    for env, states in tqdm(list(zip(envs, ends)), desc="render end states", leave=False):
        saved = env.physics.get_state().copy()
        images = []
        for state in states:
            env.restore(state)
            images.append(env.render())
        env.restore(saved)
        frames.append(np.stack(images))
    return np.stack(frames)


if __name__ == "__main__":
    raise SystemExit(main())
