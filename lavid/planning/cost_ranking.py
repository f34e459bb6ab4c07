"""Does a learned feature space rank states by their true distance to a goal? The cheap gate before planning.

A planner that minimises the distance between imagined features and a goal image's features can only reach
goals if that distance orders states the way the true distance does. :func:`cost_spearman` measures it on
held-out states without planning at all: for each goal, the Spearman rank correlation between the feature
distance and the true joint-position distance of many held-out frames, averaged over goals (1: the feature
cost ranks states exactly as the true one; raw pixels give about 0.3 on reacher).
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


def heldout_states(root: str | os.PathLike, count: int, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` stored steps drawn at random from every episode of ``root``: frames uint8 ``[M, 3, H, W]`` and
    their joint positions ``[M, Q]`` (the first ``nq`` entries of the stored physics state)."""
    episodes = [read_episode(root, e) for e in range(len(episode_table(root)))]
    index = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep.frames))]
    chosen = np.random.default_rng(seed).choice(len(index), size=min(count, len(index)), replace=False)
    frames = np.stack([episodes[index[i][0]].frames[index[i][1]] for i in chosen])
    qpos = np.stack([episodes[index[i][0]].physics[index[i][1], :nq] for i in chosen])
    return frames, qpos


@torch.no_grad()
def cost_spearman(encode, frames: np.ndarray, qpos: np.ndarray, goal_frames: np.ndarray, goal_qpos: np.ndarray,
                  batch: int = 256) -> float:
    """The mean over goals of the Spearman correlation between ``‖f(frame) − f(goal)‖₂`` and
    ``‖qpos − qpos_goal‖₂``.

    Args:
        encode: uint8 frames ``[B, 1, 3, H, W]`` -> features ``[B, 1, ...]`` (a world model's encoder).
        frames, qpos: ``[M, 3, H, W]`` held-out frames and ``[M, Q]`` their joint positions.
        goal_frames, goal_qpos: ``[G, 3, H, W]`` and ``[G, Q]``.
        batch: frames encoded per call.
    """
    def features(images: np.ndarray) -> torch.Tensor:
        parts = [encode(torch.from_numpy(images[i:i + batch])[:, None])[:, 0].flatten(1).float()
                 for i in range(0, len(images), batch)]
        return torch.cat(parts)

    states, goals = features(frames), features(goal_frames)
    feature_distance = torch.cdist(goals, states).numpy()  # [G, M]
    true_distance = np.linalg.norm(goal_qpos[:, None] - qpos[None], axis=-1)
    values = [spearman(f, t) for f, t in zip(feature_distance, true_distance)]
    return float(np.nanmean(values))
