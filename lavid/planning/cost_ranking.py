"""Does a learned feature space rank states by their true distance to a goal? The cheap gate before planning.

A planner that minimises the distance between imagined features and a goal image's features can only reach
goals if that distance orders states the way the true distance does. :func:`cost_spearman` measures it on
held-out states without planning at all: for each goal, the Spearman rank correlation between the feature
distance and the true joint distance of the states a planner for that goal compares, averaged over goals
(1: the feature cost ranks states exactly as the true one).

Two choices make the number measure what planning needs (BENCHMARKS.md, issue 34 part 2):

- **The goal's own scene.** A reacher goal shares its target (placed per episode, drawn in every frame) with
  every state the planner imagines; only the arm differs. States are therefore compared within the goal's
  held-out episode (``groups``). Across episodes the target's position, which says nothing about the arm,
  dominates any image distance.
- **Angles on the circle.** Joint angles θ and θ + 2π are the same pose and the same image; reacher's
  shoulder turns without limit and random-policy episodes wind it from −6 to +7 rad. The true distance is
  :func:`angle_distance` (each joint's difference wrapped into (−π, π]). Raw differences counted a wound
  shoulder as far from the identical picture and held raw pixels at 0.07.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from lavid.data.goals import episode_table, read_episode


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two ``[N]`` vectors (ties broken by order; NaN when one is constant)."""
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def angle_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The L2 norm over joints of the angle differences wrapped into ``(−π, π]``: ``[..., Q]`` -> ``[...]``."""
    difference = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.linalg.norm(np.arctan2(np.sin(difference), np.cos(difference)), axis=-1)


def heldout_states(root: str | os.PathLike, nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored step of every episode of ``root``: frames uint8 ``[M, 3, H, W]``, their joint positions
    ``[M, Q]`` (the first ``nq`` entries of the stored physics state) and their episode indices ``[M]``."""
    episodes = [read_episode(root, e) for e in range(len(episode_table(root)))]
    frames = np.concatenate([ep.frames for ep in episodes])
    qpos = np.concatenate([ep.physics[:len(ep.frames), :nq] for ep in episodes])
    groups = np.concatenate([np.full(len(ep.frames), e) for e, ep in enumerate(episodes)])
    return frames, qpos, groups


@torch.no_grad()
def cost_spearman(encode, frames: np.ndarray, qpos: np.ndarray, goal_frames: np.ndarray, goal_qpos: np.ndarray,
                  groups: np.ndarray | None = None, goal_groups: np.ndarray | None = None,
                  batch: int = 256) -> float:
    """The mean over goals of the Spearman correlation between ``‖f(frame) − f(goal)‖₂`` and
    :func:`angle_distance` ``(qpos, qpos_goal)``, over the states of the goal's group other than the goal.

    Args:
        encode: uint8 frames ``[B, 1, 3, H, W]`` -> features ``[B, 1, ...]`` (a world model's encoder).
        frames, qpos: ``[M, 3, H, W]`` held-out frames and ``[M, Q]`` their joint positions.
        goal_frames, goal_qpos: ``[G, 3, H, W]`` and ``[G, Q]``.
        groups, goal_groups: ``[M]`` and ``[G]``: the scene (held-out episode) of each state and goal; each
            goal is ranked against its own scene's states. ``None``: every state for every goal.
        batch: frames encoded per call.
    """
    if (groups is None) != (goal_groups is None):
        raise ValueError("give groups for both the states and the goals, or for neither")

    def features(images: np.ndarray) -> torch.Tensor:
        parts = [encode(torch.from_numpy(images[i:i + batch])[:, None])[:, 0].flatten(1).float()
                 for i in range(0, len(images), batch)]
        return torch.cat(parts)

    states, goals = features(frames), features(goal_frames)
    feature_distance = torch.cdist(goals.double(), states.double()).numpy()  # [G, M]
    true_distance = angle_distance(goal_qpos[:, None], qpos[None])  # [G, M]
    values = []
    for g in range(len(goals)):
        mask = true_distance[g] > 1e-9  # not the goal itself
        if groups is not None:
            mask &= groups == goal_groups[g]
        if mask.sum() >= 3:
            values.append(spearman(feature_distance[g, mask], true_distance[g, mask]))
    return float(np.nanmean(values)) if values else float("nan")
