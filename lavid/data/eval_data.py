"""Clips for the latent evals: the same train / held-out split as training, as frames with their metadata.

Evals always read frames (never a feature cache) and encode them with the run's own encoder, so they
work the same for frozen and finetuned encoders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lavid.data.clips import ClipDataset, split_by_episode
from lavid.data.data_config import DataConfig


@dataclass
class EvalClips:
    """Attributes:
        frames: uint8 ``[M, T, 3, H, W]``.
        episodes: ``[M]`` episode id, unique across the mixed datasets (clips of one video share it).
        tasks: per clip, the simulator task (``""`` for videos).
        actions: per clip, float ``[T, r·A]`` real actions or ``None`` (videos); with a frame stride ``r``
            each kept frame carries the ``r`` actions up to the next one (tasks keep their own ``A``).
        states: per clip, float64 ``[T, state_dim]`` the simulator's stored state (observation) at each
            kept frame, or ``None`` (videos, data without a ``state`` column, or not asked for); an empty
            list when no state was loaded at all.
    """

    frames: torch.Tensor
    episodes: torch.Tensor
    tasks: list[str]
    actions: list[torch.Tensor | None]
    states: list[torch.Tensor | None] = field(default_factory=list)

    def state(self, index: int) -> torch.Tensor | None:
        """Clip ``index``'s stored states ``[T, state_dim]``, or ``None``."""
        return self.states[index] if index < len(self.states) else None

    def __len__(self) -> int:
        return self.frames.shape[0]


def load_split(config: DataConfig, split: str, max_clips: int, seed: int = 0, actions: bool = True,
               states: bool = False) -> EvalClips:
    """Up to ``max_clips`` clips of ``split`` (``train`` or ``heldout``), drawn with ``seed``, in a fixed order.

    ``actions`` / ``states``: also read each clip's real actions / stored simulator states where the data
    has them (the action probe's ceiling reads the true pose from the states).
    """
    import datasets

    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    candidates: list[tuple[ClipDataset, int, int, str]] = []  # (dataset, clip index, episode key, task)
    for offset, (path, _) in enumerate(config.sources()):
        columns = (["action"] if actions else []) + (["state"] if states else [])
        dataset = ClipDataset(path, columns=columns, max_frames=config.frames,
                              frame_stride=config.frame_stride)
        train, heldout = split_by_episode(list(dataset.clips["source"]), config.holdout_fraction)
        chosen = heldout if split == "heldout" else train
        if split == "heldout" and not chosen:
            chosen = train[:1]
        episode_tasks = {}
        episodes = datasets.load_from_disk(str(dataset.root / "episodes"))
        if "task" in episodes.column_names:
            episode_tasks = dict(zip(episodes["episode"], episodes["task"]))
        clip_episodes = dataset.clips["episode"]
        for index in chosen:
            episode = int(clip_episodes[index])
            candidates.append((dataset, index, offset * 1_000_000 + episode, episode_tasks.get(episode, "")))
    if not candidates:
        raise ValueError(f"no {split} clips in {config.data}")
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))[:max_clips].tolist()
    frames, episodes, tasks, action_list, state_list = [], [], [], [], []
    for i in sorted(order):
        dataset, index, episode, task = candidates[i]
        item = dataset[index]
        frames.append(item["frames"])
        episodes.append(episode)
        tasks.append(task)
        action_list.append(item["action"].float() if "action" in item else None)
        state_list.append(item["state"].double() if "state" in item else None)
    return EvalClips(torch.stack(frames), torch.tensor(episodes), tasks, action_list, state_list if states else [])
