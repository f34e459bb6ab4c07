"""Offline-RL data: episodes of observations and rewards, of which only a few keep their actions.

An episode holds ``obs [L+1, O]`` (the observation before each step and after the last), ``reward [L]``
and ``action [L, A]`` -- or ``action = None`` once :func:`split_labeled` has made it unlabeled: the actions
are removed from the data, not just ignored, so nothing downstream can read them.

Sources: a ``data_prep/dmc.py`` trajectory dataset (its ``state`` column, the proprioceptive observation)
or the replay buffer of ``data_prep/train_expert.py`` (``replay.npz``, the medium-replay data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch


class OfflineDataError(ValueError):
    """Data that offline RL cannot learn from (no rewards, no labeled episode, a bad fraction)."""


@dataclass
class OfflineEpisode:
    """One episode: ``obs [L+1, O]`` float32, ``reward [L]`` float32, ``action [L, A]`` float32 or ``None``."""

    obs: np.ndarray
    reward: np.ndarray
    action: np.ndarray | None
    name: str

    @property
    def labeled(self) -> bool:
        return self.action is not None

    def __len__(self) -> int:
        return len(self.reward)


def load_replay(path: str | os.PathLike) -> list[OfflineEpisode]:
    """Episodes of a ``replay.npz`` written by ``data_prep/train_expert.py`` (actions in [-1, 1])."""
    try:
        data = np.load(path)
        missing = [k for k in ("state", "next_state", "action", "reward", "episode") if k not in data.files]
        if missing:
            raise OfflineDataError(f"{path} is not a replay buffer: no {', '.join(missing)}"
                                   + (" (offline RL needs rewards)" if "reward" in missing else ""))
        state, next_state, action = data["state"], data["next_state"], data["action"]
        reward, episode = data["reward"], data["episode"]
    except (OSError, ValueError) as error:
        if isinstance(error, OfflineDataError):
            raise
        raise OfflineDataError(f"cannot read a replay buffer from {path}: {error}") from None
    episodes = []
    for e in np.unique(episode):
        rows = np.flatnonzero(episode == e)
        obs = np.concatenate([state[rows], next_state[rows[-1:]]]).astype(np.float32)
        episodes.append(OfflineEpisode(obs, reward[rows].astype(np.float32), action[rows].astype(np.float32),
                                       f"replay/{int(e)}"))
    return episodes


def load_trajectories(root: str | os.PathLike) -> list[OfflineEpisode]:
    """Episodes of a ``data_prep/dmc.py`` dataset, observed through its ``state`` column. The last stored
    step has no next observation, so each episode keeps ``num_steps - 1`` transitions. Actions are clipped
    to [-1, 1], the bounds of every DMControl suite task (the policies here act in [-1, 1])."""
    import datasets

    from lavid.data.clips import read_rows
    from lavid.data.goals import episode_table

    root = Path(root)
    table = episode_table(root)
    tasks = sorted(set(table["task"]))
    if len(tasks) > 1:
        raise OfflineDataError(f"{root} mixes tasks ({', '.join(tasks)}); offline RL learns one task's data")
    steps = datasets.load_from_disk(str(root / "steps"))
    if "reward" not in steps.column_names:
        raise OfflineDataError(f"{root} has no reward column: offline RL needs rewards")
    episodes = []
    for row in table:
        n = int(row["num_steps"])
        if n < 2:
            continue
        stored = read_rows(steps, int(row["first_row"]), n, ["state", "action", "reward"])
        reward = np.asarray(stored["reward"], np.float32)
        if not np.isfinite(reward).all():
            raise OfflineDataError(f"{root}: episode {row['source']} has missing rewards")
        state = np.asarray(stored["state"], np.float32).reshape(n, -1)[:, : int(row["state_dim"])]
        action = np.asarray(stored["action"], np.float32).reshape(n, -1)[:, : int(row["action_dim"])]
        episodes.append(OfflineEpisode(state, reward[:-1], np.clip(action[:-1], -1, 1), row["source"]))
    if not episodes:
        raise OfflineDataError(f"{root} has no episode with at least 2 steps")
    return episodes


def load_offline(path: str | os.PathLike) -> list[OfflineEpisode]:
    """A ``replay.npz`` file or a trajectory dataset folder."""
    path = Path(path)
    if not path.exists():
        raise OfflineDataError(f"no offline data at {path}")
    return load_replay(path) if path.is_file() else load_trajectories(path)


def split_labeled(episodes: list[OfflineEpisode], labeled_fraction: float, seed: int = 0
                  ) -> list[OfflineEpisode]:
    """Keep the actions of ``labeled_fraction`` of the episodes (rounded down, at least one), chosen at
    random with ``seed``; the others lose theirs (``action=None``)."""
    if not 0 < labeled_fraction <= 1:
        raise OfflineDataError(f"labeled_fraction must be in (0, 1], got {labeled_fraction}")
    if not episodes:
        raise OfflineDataError("no episodes to split")
    count = max(1, int(len(episodes) * labeled_fraction))
    chosen = set(np.random.default_rng(seed).permutation(len(episodes))[:count].tolist())
    return [ep if i in chosen else replace(ep, action=None) for i, ep in enumerate(episodes)]


@dataclass
class Transitions:
    """Every transition of some episodes as tensors: ``obs [N, O]``, ``next_obs [N, O]``, ``reward [N]``;
    ``action [M, A]`` with ``labeled [M]`` the rows of ``obs`` it belongs to (only labeled episodes)."""

    obs: torch.Tensor
    next_obs: torch.Tensor
    reward: torch.Tensor
    action: torch.Tensor
    labeled: torch.Tensor

    @classmethod
    def from_episodes(cls, episodes: list[OfflineEpisode]) -> Transitions:
        if not episodes:
            raise OfflineDataError("no episodes")
        obs = np.concatenate([ep.obs[:-1] for ep in episodes])
        next_obs = np.concatenate([ep.obs[1:] for ep in episodes])
        reward = np.concatenate([ep.reward for ep in episodes])
        offsets = np.cumsum([0] + [len(ep) for ep in episodes])
        labeled = [np.arange(offsets[i], offsets[i + 1]) for i, ep in enumerate(episodes) if ep.labeled]
        actions = [ep.action for ep in episodes if ep.labeled]
        action_dim = actions[0].shape[1] if actions else 0
        return cls(
            torch.as_tensor(obs), torch.as_tensor(next_obs), torch.as_tensor(reward),
            torch.as_tensor(np.concatenate(actions) if actions else np.zeros((0, action_dim), np.float32)),
            torch.as_tensor(np.concatenate(labeled) if labeled else np.zeros(0, np.int64)),
        )

    def __len__(self) -> int:
        return len(self.reward)


@dataclass
class Normalizer:
    """Per-entry standardisation of observations: ``(obs - mean) / std``."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, obs: torch.Tensor) -> Normalizer:
        return cls(obs.mean(0), obs.std(0).clamp_min(1e-3))

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean.to(obs.device)) / self.std.to(obs.device)
