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

A latent-action run (``model.condition=latent``) imagines through its controller (``RUN/--controller``), as
``evals/plan.py`` plans with it. ``--idm-candidates N`` separates the controller from the world model: the first
``N`` candidates (the stored one and ``N − 1`` random ones) are also rolled out in MuJoCo step by step, every
step rendered, and the world model imagines each from the start image with the IDM's latents of its true frames
(the latents the model was trained with, instead of the controller's guess of them); the second table then
gives, on the same ``N − 1`` random candidates, the Spearman and the model's pick with the controller's latents
and with the IDM's (an action-conditioned run: its own actions in both columns). A latent world model that ranks
well from the IDM's latents and badly from the controller's loses its ranking in the controller.

``--context 2`` gives the model the stored frame before the start and the action taken from it (what the
planner sees from its second plan on: the velocity, which one image does not show); pairs that start at
an episode's first step are then left out.

Usage:
    python benchmarks/sequence_ranking.py --heldout OUT/heldout --runs RUN [RUN ...] [--pairs 50]
        [--candidates 300] [--goal-offset 5] [--context 1|2] [--render] [--task reacher-easy] [--action-repeat 10]
        [--controller controller] [--idm-candidates 100] [--idm-cache FILE.npz]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from lavid.planning.cost_ranking import spearman


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", required=True, help="held-out trajectories (evals/plan.py's OUT/heldout)")
    parser.add_argument("--runs", nargs="+", required=True,
                        help="trained runs: model.condition=action, or latent runs with a controller (--controller)")
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
    parser.add_argument("--controller", default="controller",
                        help="a latent run's controller, a subfolder of the run (evals/plan.py's controller folder)")
    parser.add_argument("--idm-candidates", type=int, default=0,
                        help="latent runs: also imagine the first N candidates with the IDM's latents of their true "
                             "rollouts (renders N x goal-offset frames a pair)")
    parser.add_argument("--idm-cache", default="", help="a .npz to keep the rendered rollouts of --idm-candidates in")
    args = parser.parse_args(argv)
    if args.idm_candidates and not 3 <= args.idm_candidates <= args.candidates + 1:
        parser.error(f"--idm-candidates must be in [3, --candidates + 1], got {args.idm_candidates}")

    from lavid.planning.dynamics import ActionDynamics
    from lavid.planning.fit_controller import load_controller
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
    paths = None
    if args.idm_candidates:  # every stored step of the first candidates, as the camera sees it
        steps_states = _rollout_states(envs, candidates[:, :args.idm_candidates])  # [E, N, H, Q + V]
        flat = steps_states.reshape(count, -1, steps_states.shape[-1])
        paths = _cached_render(envs, flat, args.idm_cache)
        paths = paths.reshape(*steps_states.shape[:3], *paths.shape[2:])  # [E, N, H, 3, h, w]
    for env in envs:
        env.close()
    print(f"{args.task}: {count} pairs, goal {steps} stored steps ahead, {args.candidates} uniform random sequences "
          f"+ the stored one a pair, context {args.context}; the stored sequence's true distance {true[:, 0].mean():.4f} (0 up to float "
          f"error), the random ones' median {np.median(true[:, 1:]):.3f}, best {true[:, 1:].min(1).mean():.3f}\n")
    extra = " Spearman, true frames | chosen, true frames |" if args.render else ""
    print(f"| run | Spearman | stored rank | chosen / best true distance | chosen ≤ 0.05 rad |{extra} s |")
    print("|---|---:|---:|---|---:|" + ("---:|---:|" if args.render else "") + "---:|")
    subset_rows = []
    for run in args.runs:
        start = time.perf_counter()
        model = load_run(run).model.eval()
        controller = None if model.action_conditioned else load_controller(Path(run) / args.controller)[0]
        dynamics = ActionDynamics(model, controller, action_dim)
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
        if paths is not None:
            n = args.idm_candidates
            idm_cost = (model_cost[:, :n] if model.action_conditioned
                        else _idm_cost(dynamics, context, past, goals, paths))
            subset_rows.append((run, *_subset_ranking(model_cost[:, :n], true[:, :n]),
                                *_subset_ranking(idm_cost, true[:, :n])))
    if subset_rows:
        print(f"\nThe first {args.idm_candidates - 1} random candidates a pair: imagined with the controller's latents "
              "(an action run: its actions) and with the IDM's latents of the candidates' true rollouts\n")
        print("| run | Spearman, controller | Spearman, IDM latents | chosen true distance, controller | "
              "chosen true distance, IDM latents |")
        print("|---|---:|---:|---:|---:|")
        for run, rho, chosen, idm_rho, idm_chosen in subset_rows:
            print(f"| {run} | {rho:.3f} | {idm_rho:.3f} | {chosen:.3f} | {idm_chosen:.3f} |", flush=True)
    return 0


def _subset_ranking(cost: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """Over the random candidates (column 0, the stored one, left out) of ``cost, true [E, 1 + K]``: the mean
    Spearman a pair, and the mean true distance of the cheapest candidate."""
    rho = float(np.nanmean([spearman(c[1:], t[1:]) for c, t in zip(cost, true)]))
    chosen = true[np.arange(len(true)), 1 + cost[:, 1:].argmin(1)]
    return rho, float(chosen.mean())


@torch.no_grad()
def _idm_cost(dynamics, context: torch.Tensor, past: torch.Tensor, goals: torch.Tensor, paths: np.ndarray
              ) -> np.ndarray:
    """``[E, N]`` the planner's cost of each candidate imagined from the start with the IDM's latents of its
    true rollout: ``context [E, S, N_tok, D]``, ``past [E, S-1, C]``, ``goals [E, N_tok, D]``, rendered
    ``paths`` uint8 ``[E, N, H, 3, h, w]``."""
    model, costs = dynamics.model, []
    for e, frames in enumerate(paths):
        states = dynamics.encode(torch.from_numpy(frames))  # [N, H, N_tok, D]
        observed = context[e:e + 1].expand(len(states), -1, -1, -1)  # [N, S, N_tok, D]
        latents, _, _ = model.infer_latents(torch.cat([observed[:, -1:], states], dim=1))  # [N, H, C]
        conditions = torch.cat([past[e:e + 1].expand(len(states), -1, -1), latents], dim=1)
        imagined = model.rollout(observed, conditions)  # [N, H, N_tok, D]
        costs.append((imagined[:, -1] - goals[e]).flatten(1).norm(dim=-1))
    return torch.stack(costs).numpy()


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


def _rollout_states(envs, candidates: torch.Tensor) -> np.ndarray:
    """``[E, K, H, Q + V]`` the state after every stored step of each candidate ``[E, K, H, A]``."""
    return _states(envs, candidates, every=True)


def _end_states(envs, candidates: torch.Tensor) -> np.ndarray:
    """``[E, K, Q + V]`` each candidate's end state (joint positions, then velocities) rolled out in MuJoCo
    from each pair's start, at the environments' action repeat."""
    return _states(envs, candidates, every=False)


def _states(envs, candidates: torch.Tensor, every: bool) -> np.ndarray:
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
        kept = states[:, env.action_repeat - 1::env.action_repeat] if every else states[:, -1]
        out.append(kept[..., 1:1 + model.nq + model.nv])  # FULLPHYSICS: time, qpos, qvel, ...
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
