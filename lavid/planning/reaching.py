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
