"""Goal-reaching episodes from stored trajectories: start states, goal images, the oracle and the metrics.

Episode ``e`` of a goal dataset (made by ``data_prep/dmc.py`` / :func:`lavid.data.trajectories.build_trajectory_dataset`
with a seed of its own) gives the start (its stored step 0), the goal (its stored step ``goal_step``:
the image and where the body was) and the oracle (the stored actions from one to the other: replayed in
the deterministic simulator, they reach the goal exactly). Distances are between
:meth:`lavid.data.sim.SimEnv.effector` positions: Jaco's pinch site and reacher's fingertip in metres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lavid.data.goals import episode_table, read_episode
from lavid.data.sim import SimEnv


@dataclass
class GoalSet:
    """Attributes:
        task, camera, size: the simulator set-up the episodes were recorded with.
        seeds: ``[E]`` each episode's task seed: a simulator made with it places what the physics state does
            not hold (reacher's target) where the recording had it.
        start_physics: ``[E, P]``; targets: ``[E, 3]`` Jaco's target sites, or ``None``.
        start_frames, goal_frames: uint8 ``[E, 3, H, W]``.
        start_effector, goal_effector: ``[E, Q]`` (:meth:`SimEnv.effector`).
        oracle_actions: ``[E, G, A]`` the stored actions from start to goal (``G = goal_step``).
        start_qpos, goal_qpos: ``[E, Q]`` the joint positions at the start and the goal.
        episodes: ``[E]`` the index in the goal dataset of the episode each pair comes from.
        history_frames: uint8 ``[E, K, 3, H, W]`` the ``K`` stored frames before the start, oldest first, and
            history_actions: ``[E, K, A]`` the stored action after each (the last one leads to the start);
            ``None`` unless asked for (:func:`draw_pairs`'s ``history``).
    """

    task: str
    camera: int | str
    size: int
    seeds: np.ndarray
    start_physics: np.ndarray
    targets: np.ndarray | None
    start_frames: np.ndarray
    goal_frames: np.ndarray
    start_effector: np.ndarray
    goal_effector: np.ndarray
    oracle_actions: np.ndarray
    start_qpos: np.ndarray | None = None
    goal_qpos: np.ndarray | None = None
    episodes: np.ndarray | None = None
    history_frames: np.ndarray | None = None
    history_actions: np.ndarray | None = None

    def __len__(self) -> int:
        return self.start_physics.shape[0]


def load_goals(root: str | os.PathLike, task: str, episodes: int, goal_step: int) -> GoalSet:
    """The first ``episodes`` episodes of ``root`` as start / goal pairs ``goal_step`` stored steps apart.

    Raises:
        ValueError: the dataset holds another task, too few episodes, or episodes shorter than ``goal_step + 1``.
    """
    table = episode_table(root)
    tasks = sorted(set(table["task"]))
    if tasks != [task]:
        raise ValueError(f"goal dataset {root} holds {', '.join(tasks)}, not only {task}: goals must come from the "
                         "task that is planned in")
    if len(table) < episodes:
        raise ValueError(f"goal dataset {root} has {len(table)} episodes, {episodes} asked for")
    if goal_step < 1:
        raise ValueError(f"goal_step must be >= 1, got {goal_step}")
    loaded = [read_episode(root, e) for e in range(episodes)]
    short = [e for e, ep in enumerate(loaded) if len(ep.frames) <= goal_step]
    if short:
        raise ValueError(f"episode {short[0]} of {root} has {len(loaded[short[0]].frames)} steps, fewer than "
                         f"goal_step + 1 = {goal_step + 1}")
    first = loaded[0]
    size = first.frames.shape[-1]
    starts, goals = [], []
    env = SimEnv(task, seed=0, size=size, camera=first.camera)
    try:
        for ep in loaded:
            target = None if ep.target is None else ep.target[0]
            env.restore(ep.physics[0], target)
            starts.append(env.effector())
            env.restore(ep.physics[goal_step], target)
            goals.append(env.effector())
    finally:
        env.close()
    return GoalSet(
        task=task, camera=first.camera, size=size, seeds=np.asarray(table["seed"][:episodes], np.int64),
        start_physics=np.stack([ep.physics[0] for ep in loaded]),
        targets=None if first.target is None else np.stack([ep.target[0] for ep in loaded]),
        start_frames=np.stack([ep.frames[0] for ep in loaded]),
        goal_frames=np.stack([ep.frames[goal_step] for ep in loaded]),
        start_effector=np.stack(starts), goal_effector=np.stack(goals),
        oracle_actions=np.stack([ep.actions[:goal_step] for ep in loaded]),
    )


def draw_pairs(root: str | os.PathLike, task: str, pairs: int, offset: int, seed: int, history: int = 0) -> GoalSet:
    """``pairs`` start / goal pairs from the episodes of ``root``, the anchors' way (LeWorldModel, DINO-WM): an
    episode and a start step drawn at random, the goal the stored step ``offset`` steps later in the same
    episode. ``root`` should hold trajectories no model trained on (held-out episodes of the behaviour that
    made the training data).

    Args:
        root: a trajectory dataset of ``task``. pairs: how many. offset: stored steps from start to goal.
        seed: the draw's seed (the same seed gives the same pairs).
        history: also keep the ``history`` stored frames before each start and the actions between them
            (``GoalSet.history_frames`` / ``history_actions``), for a planner that may see what led to the start
            (the anchors' see the start frame only). The pairs are the same for every ``history``. Before an
            episode's first step the arm was at rest (DMControl starts episodes with zero velocity), so a step
            before it repeats its first frame with a zero action.

    Raises:
        ValueError: another task, or no episode longer than ``offset``.
    """
    table = episode_table(root)
    tasks = sorted(set(table["task"]))
    if tasks != [task]:
        raise ValueError(f"goal dataset {root} holds {', '.join(tasks)}, not only {task}: goals must come from the "
                         "task that is planned in")
    if offset < 1 or pairs < 1:
        raise ValueError(f"offset and pairs must be >= 1, got {offset} and {pairs}")
    if history < 0:
        raise ValueError(f"history must be >= 0, got {history}")
    lengths = np.asarray(table["num_steps"], np.int64)
    usable = np.flatnonzero(lengths > offset)
    if usable.size == 0:
        raise ValueError(f"no episode of {root} is longer than the goal offset {offset} (longest {lengths.max()})")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(usable, size=pairs, replace=True)
    starts = [int(rng.integers(0, lengths[e] - offset)) for e in chosen]
    loaded = {int(e): read_episode(root, int(e)) for e in sorted(set(chosen.tolist()))}
    first = loaded[int(chosen[0])]
    env = SimEnv(task, seed=0, size=first.frames.shape[-1], camera=first.camera)
    effector, qpos = {"start": [], "goal": []}, {"start": [], "goal": []}
    try:
        for e, t in zip(chosen, starts):
            ep = loaded[int(e)]
            for which, step in (("start", t), ("goal", t + offset)):
                env.restore(ep.physics[step], None if ep.target is None else ep.target[step])
                effector[which].append(env.effector())
                qpos[which].append(env.qpos())
    finally:
        env.close()
    episodes = [loaded[int(e)] for e in chosen]
    before_frames = before_actions = None
    if history:
        steps = [[t - i for i in range(history, 0, -1)] for t in starts]  # oldest first; < 0: before the episode
        before_frames = np.stack([np.stack([ep.frames[max(b, 0)] for b in back])
                                  for ep, back in zip(episodes, steps)])
        before_actions = np.stack([np.stack([ep.actions[b] if b >= 0 else np.zeros_like(ep.actions[0]) for b in back])
                                   for ep, back in zip(episodes, steps)]).astype(np.float32)
    return GoalSet(
        task=task, camera=first.camera, size=first.frames.shape[-1],
        seeds=np.asarray([table["seed"][int(e)] for e in chosen], np.int64),
        start_physics=np.stack([ep.physics[t] for ep, t in zip(episodes, starts)]),
        targets=None if first.target is None else np.stack([ep.target[t] for ep, t in zip(episodes, starts)]),
        start_frames=np.stack([ep.frames[t] for ep, t in zip(episodes, starts)]),
        goal_frames=np.stack([ep.frames[t + offset] for ep, t in zip(episodes, starts)]),
        start_effector=np.stack(effector["start"]), goal_effector=np.stack(effector["goal"]),
        oracle_actions=np.stack([ep.actions[t:t + offset] for ep, t in zip(episodes, starts)]),
        start_qpos=np.stack(qpos["start"]), goal_qpos=np.stack(qpos["goal"]), episodes=chosen.astype(np.int64),
        history_frames=before_frames, history_actions=before_actions,
    )


def qpos_success(trace: np.ndarray, goal_qpos: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """LeWorldModel's reacher success (stable-worldmodel's ``qpos_match``): every joint within ``threshold``
    radians of the goal's (unwrapped ``|qpos - goal|``, a max-norm over joints) at *any* step of the budget.

    Args:
        trace: ``[E, T, Q]`` joint positions after every control step (the start included).
        goal_qpos: ``[E, Q]``.

    Returns:
        ``[E]`` bool.
    """
    return (np.abs(trace - goal_qpos[:, None]) < threshold).all(axis=-1).any(axis=-1)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % for ``z = 1.96``); ``(0, 1)`` with no trials."""
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def start_envs(goals: GoalSet, action_repeat: int) -> list[SimEnv]:
    """One simulator per episode, restored to its start state (and Jaco's target)."""
    envs = []
    for e in range(len(goals)):
        env = SimEnv(goals.task, seed=int(goals.seeds[e]), size=goals.size, camera=goals.camera, action_repeat=action_repeat)
        env.restore(goals.start_physics[e], None if goals.targets is None else goals.targets[e])
        envs.append(env)
    return envs


def reaching_metrics(effector: np.ndarray, goals: GoalSet, threshold: float) -> dict[str, float]:
    """Distances to the goal at the end of ``effector [E, T+1, Q]``.

    ``final_distance``: Euclidean, per episode; ``delta_xyz``: the mean absolute error per axis (the
    reference paper's Δxyz for an arm); ``success_rate``: share of episodes ending within ``threshold``;
    ``start_distance``: where they began.
    """
    final = effector[:, -1] - goals.goal_effector
    distance = np.linalg.norm(final, axis=-1)
    start = np.linalg.norm(goals.start_effector - goals.goal_effector, axis=-1)
    return {
        "final_distance_mean": float(distance.mean()), "final_distance_std": float(distance.std()),
        "delta_xyz_mean": float(np.abs(final).mean()), "success_rate": float((distance < threshold).mean()),
        "start_distance_mean": float(start.mean()), "episodes": int(len(distance)),
    }
