"""Torch datasets and loaders over lavid clip datasets (video indexes, materialized clips, trajectories).

A clip index decodes its frames on the fly (in the DataLoader's workers); a dataset with stored steps
reads a contiguous slice of memory-mapped Arrow rows. Both yield the same item layout, so every trainer
and eval reads videos and simulator trajectories alike.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lavid.data.sources import read_source
from lavid.data.store import META_FILE, read_meta
from lavid.data.video import VideoError, decode_clip

log = logging.getLogger(__name__)

STEP_COLUMNS_SKIPPED = ("frame", "step")
"""Step columns not returned as per-step extras (``frame`` is returned as ``frames``)."""


def read_rows(dataset, start: int, length: int, columns: list[str]) -> dict[str, np.ndarray]:
    """Rows ``[start, start + length)`` of a ``datasets.Dataset`` as numpy arrays, straight from Arrow.

    Faster than ``datasets``' numpy formatting (no per-row Python objects) and keeps the stored
    dtypes (uint8 frames, float64 physics states). List columns must have one length within the range.

    Returns:
        ``{column: [length, ...] array}``; ``ArrayND`` features keep their shape.
    """
    import pyarrow as pa

    table = dataset.data.slice(start, length)
    out = {}
    for name in columns:
        array = table.column(name).combine_chunks()
        if isinstance(array, pa.ExtensionArray):
            array = array.storage
        nested = False
        while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(
            array.type
        ):
            array, nested = array.flatten(), True
        values = array.to_numpy(zero_copy_only=False)
        shape = getattr(dataset.features[name], "shape", None)
        if shape is not None:
            values = values.reshape(length, *shape)
        elif nested:
            values = values.reshape(length, -1)
        out[name] = values
    return out


class DatasetFormatError(Exception):
    """A folder is not a complete lavid dataset."""


def open_meta(root: str | os.PathLike) -> dict[str, Any]:
    """Read ``root/lavid.json`` and check the dataset is complete."""
    meta = read_meta(root)
    if meta is None:
        raise DatasetFormatError(
            f"{root} is not a lavid dataset (no {META_FILE}); build one with data_prep/videos.py or data_prep/dmc.py"
        )
    if not meta.get("complete"):
        raise DatasetFormatError(f"{root} is an unfinished build; rerun the command that made it to finish it")
    return meta


class ClipDataset(Dataset):
    """Clips of a lavid dataset as ``uint8`` frame tensors.

    Args:
        root: dataset folder made by ``data_prep/videos.py`` or ``data_prep/dmc.py``.
        backend: video decoder for clip indexes (``"auto"``: decord, falling back to PyAV).
        columns: per-step columns to return besides the frames (default: all; ``[]``: frames only).
        max_frames: return only the first ``max_frames`` (kept) frames of each clip.
        max_retries: a clip that cannot be decoded is reported and replaced by the next clip; give up
            after this many consecutive failures.
        frame_stride: keep every ``r``-th stored frame; a clip of ``T`` kept frames reads ``T·r`` stored
            ones. Kept frame ``t``'s ``action`` is the ``r`` stored actions from it up to the next kept
            frame, concatenated (``[T, r·A]``, see :func:`lavid.data.actions.stride_actions`); its ``reward``
            is the sum of their ``r`` rewards; every other column is its value at the kept frame.
        pad_actions: zero-pad each stored frame's action to this many entries before grouping (tasks of a
            mix with different action sizes then give one shape: ``[T, r·pad_actions]``).

    Items are dicts:
        ``frames``: ``[T, 3, H, W]`` uint8;
        ``index``: the clip's row; ``episode``: its episode; ``start_frame``: its first step;
        plus, for trajectories, each per-step column (``action [T, r·A]``, ``reward [T]``, ...).
    """

    def __init__(self, root: str | os.PathLike, backend: str = "auto", max_retries: int = 16,
                 columns: list[str] | None = None, max_frames: int | None = None, frame_stride: int = 1,
                 pad_actions: int | None = None) -> None:
        import datasets

        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        self.columns = columns
        self.max_frames = max_frames
        self.frame_stride = frame_stride
        self.pad_actions = pad_actions
        self.root = Path(root)
        self.meta = open_meta(self.root)
        self.backend = backend
        self.max_retries = max_retries
        self.fps = float(self.meta.get("fps") or 0.0)
        self.size = int(self.meta["size"])
        self.clips = datasets.load_from_disk(str(self.root / "clips"))
        episodes = datasets.load_from_disk(str(self.root / "episodes"))
        self.first_row = np.asarray(episodes["first_row"], dtype=np.int64)
        self.steps = None
        if (self.root / "steps").exists():
            self.steps = datasets.load_from_disk(str(self.root / "steps"))
        self._failed: set[int] = set()

    @property
    def materialized(self) -> bool:
        return self.steps is not None

    @property
    def step_columns(self) -> list[str]:
        if self.steps is None:
            return []
        available = [c for c in self.steps.column_names if c not in STEP_COLUMNS_SKIPPED]
        return available if self.columns is None else [c for c in available if c in self.columns]

    @property
    def action_dim(self) -> int | None:
        """The largest action size per stored frame (``None``: no ``action`` column, e.g. videos).

        Read from the per-task sizes in ``lavid.json`` (``task_dims``), else the column's fixed length,
        else the longest stored action.
        """
        if self.steps is None or "action" not in self.steps.column_names:
            return None
        dims = [int(d["action"]) for d in (self.meta.get("task_dims") or {}).values() if d.get("action")]
        if dims:
            return max(dims)
        length = getattr(self.steps.features["action"], "length", -1)
        if length is not None and length > 0:
            return int(length)
        import pyarrow.compute as pc

        return int(pc.max(pc.list_value_length(self.steps.data.column("action"))).as_py() or 0)

    def __len__(self) -> int:
        return len(self.clips)

    def _load(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        episode, start, length = int(clip["episode"]), int(clip["start_frame"]), int(clip["num_frames"])
        stride = self.frame_stride
        if self.max_frames is not None:
            if length < self.max_frames * stride:
                asked = f"{self.max_frames} frames" + (f" at frame stride {stride}" if stride > 1 else "")
                raise ValueError(f"clips of {self.root} have {length} frames, fewer than the {asked} asked")
            length = self.max_frames * stride
        length -= length % stride  # whole strides only: every kept frame carries its r actions
        item: dict[str, Any] = {"index": index, "episode": episode, "start_frame": start}
        if self.steps is not None:
            row = int(self.first_row[episode]) + start
            rows = read_rows(self.steps, row, length, ["frame", *self.step_columns])
            for column, values in rows.items():
                # copy: the Arrow buffers are read-only memory maps
                item["frames" if column == "frame" else column] = self._strided(column, torch.from_numpy(
                    np.array(values, copy=True)))
        else:
            fps = float(clip["fps"]) or None
            frames = decode_clip(read_source(clip["source"]), clip["start"], length, fps, self.size, backend=self.backend)
            item["frames"] = torch.from_numpy(np.ascontiguousarray(frames[::stride]))
        return item

    def _strided(self, column: str, values: torch.Tensor) -> torch.Tensor:
        """One stored column ``[T·r, ...]`` -> per kept frame ``[T, ...]`` (see the class docstring)."""
        from lavid.data.actions import pad_actions, stride_actions

        stride = self.frame_stride
        if column == "action":
            values = values.reshape(values.shape[0], -1)
            if self.pad_actions is not None:
                values = pad_actions(values, self.pad_actions)
            return stride_actions(values, stride) if stride > 1 else values
        if stride == 1:
            return values
        if column == "reward":
            return values.reshape(-1, stride, *values.shape[1:]).sum(1)
        return values[::stride]

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(self.max_retries):
            current = (index + attempt) % len(self)
            try:
                return self._load(current)
            except VideoError as error:
                if current not in self._failed:
                    self._failed.add(current)
                    source = self.clips[current]["source"]
                    warnings.warn(f"skipping clip {current} of {source}: {error}", stacklevel=2)
        raise RuntimeError(
            f"{self.max_retries} consecutive clips from index {index} could not be decoded; "
            f"is the data under {self.root} still readable?"
        )


class ClipSampler(Sampler[int]):
    """Seeded shuffling, split across processes, resumable at a position within an epoch.

    Each epoch draws a permutation from ``seed + epoch``; process ``rank`` of ``num_replicas`` takes
    every ``num_replicas``-th index (the permutation is padded by wrapping so all get equally many).

    Args:
        num_items: dataset length.
        seed: base seed.
        shuffle: permute (else keep order).
        num_replicas, rank: this process's share (from ``accelerate``'s state).
        start: skip this many of this process's indices in the current epoch (resume).
        weights: per-item sampling weights; each epoch then draws ``num_items`` items with replacement
            (a weighted mix of datasets) instead of a permutation.
    """

    def __init__(
        self,
        num_items: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        start: int = 0,
        weights: torch.Tensor | None = None,
    ) -> None:
        if num_items <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_items, self.seed, self.shuffle = num_items, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.start = 0, start
        self.weights = weights
        if weights is not None and len(weights) != num_items:
            raise ValueError(f"{len(weights)} weights for {num_items} items")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def per_replica(self) -> int:
        return math.ceil(self.num_items / self.num_replicas)

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.num_items, replacement=True, generator=generator).tolist()
        elif self.shuffle:
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        total = self.per_replica * self.num_replicas
        order += order[: total - len(order)] if total > len(order) else []
        while len(order) < total:  # fewer items than replicas
            order += order[: total - len(order)]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_replica - self.start


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    torch.set_num_threads(1)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int = 0,
    num_workers: int = 0,
    shuffle: bool = True,
    num_replicas: int = 1,
    rank: int = 0,
    drop_last: bool = True,
    prefetch_factor: int = 4,
    weights: torch.Tensor | None = None,
    epoch: int = 0,
    start: int = 0,
) -> DataLoader:
    """A deterministic DataLoader over ``dataset``, sharded for process ``rank`` of ``num_replicas``.

    ``epoch`` and ``start`` (items of this process already consumed in that epoch) resume a position.

    Returns:
        A loader whose ``sampler`` is a :class:`ClipSampler` (call ``loader.sampler.set_epoch``).
    """
    sampler = ClipSampler(len(dataset), seed=seed, shuffle=shuffle, num_replicas=num_replicas, rank=rank,
                          weights=weights)
    sampler.set_epoch(epoch, start)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )


def episode_identities(sources: list[str]) -> list[str]:
    """Each episode/video source string reduced to what names the episode itself, not where it is stored.

    Simulator episodes (``sim:task/camera=…/policy=…/episode=K``) are their own identity. Video files are
    named by their path relative to the folder all of ``sources`` share; rows of a ``dataset:`` source by
    the dataset folder's name and the row. So moving a dataset, or the videos it indexes, keeps its split.
    """
    from lavid.data.sources import DATASET_PREFIX

    files = [s for s in sources if os.path.isabs(s)]
    root = os.path.commonpath(files) if files else ""
    if files and all(s == root for s in files):  # one video: its own name
        root = os.path.dirname(root)
    out = []
    for source in sources:
        if os.path.isabs(source):
            out.append(os.path.relpath(source, root).replace(os.sep, "/"))
        elif source.startswith(DATASET_PREFIX):
            location, _, row = source[len(DATASET_PREFIX):].rpartition("#")
            out.append(f"{os.path.basename(location.split('?')[0].rstrip('/'))}#{row}")
        else:
            out.append(source)
    return out


def episode_stratum(identity: str) -> str:
    """The group an episode is drawn from: its task, camera and policy for a simulator episode (the
    identity without ``/episode=K``), its sub-folder for a video file, its dataset for a dataset row."""
    if "#" in identity:
        return identity.partition("#")[0]
    return identity.rpartition("/")[0]


def _hash(identity: str) -> int:
    import zlib

    return zlib.crc32(identity.encode("utf-8", "surrogateescape"))


def split_by_episode(sources: list[str], fraction: float) -> tuple[list[int], list[int]]:
    """Indices of clips (one source string each) for training and held out, stratified and stable.

    Episodes are grouped by :func:`episode_stratum` (task / camera / policy, or video sub-folder); in each
    group of ``n`` episodes, the ``round(fraction · n)`` with the lowest hash of their identity
    (:func:`episode_identities`: not the dataset's path) are held out, at least one and never all of
    them, so every task that has two episodes or more is scored. No episode has clips on both sides.
    """
    identities = episode_identities(sources)
    held_episodes: set[str] = set()
    if fraction > 0:
        strata: dict[str, set[str]] = {}
        for identity in identities:
            strata.setdefault(episode_stratum(identity), set()).add(identity)
        for members in strata.values():
            if len(members) < 2:
                continue
            count = min(len(members) - 1, max(1, round(fraction * len(members))))
            held_episodes.update(sorted(members, key=lambda m: (_hash(m), m))[:count])
        episodes = sorted(set(identities), key=lambda m: (_hash(m), m))
        if not held_episodes and len(episodes) > 1:  # every stratum holds one episode: split them as one
            held_episodes = set(episodes[: min(len(episodes) - 1, max(1, round(fraction * len(episodes))))])
    train = [i for i, identity in enumerate(identities) if identity not in held_episodes]
    heldout = [i for i, identity in enumerate(identities) if identity in held_episodes]
    return train, heldout


class FeatureDataset(Dataset):
    """Clips of cached encoder features (``data_prep/encode.py``).

    Args:
        root: the cache folder.
        max_steps: return only the first ``max_steps`` steps of each clip.
        pad_actions: also return the clip's cached actions, each stored frame's action zero-padded to this
            many entries (the cache must hold actions: ``meta["action_dim"] > 0``).

    Items: ``{"features": [S, N, D] float32, "index": int}`` plus, with ``pad_actions``,
    ``"actions": [T, r·pad_actions] float32`` (``T = S·k`` kept frames, ``r`` the cache's frame stride).
    """

    def __init__(self, root: str | os.PathLike, max_steps: int | None = None, pad_actions: int | None = None) -> None:
        import datasets

        self.root = Path(root)
        self.meta = open_meta(self.root)
        if self.meta.get("kind") != "features":
            raise DatasetFormatError(f"{root} is not a feature cache (kind={self.meta.get('kind')})")
        self.table = datasets.load_from_disk(str(self.root / "clips"))
        self.max_steps = max_steps
        self.pad_actions = pad_actions
        self.action_dim = int(self.meta.get("action_dim") or 0)
        self.frame_stride = int(self.meta.get("frame_stride", 1))
        if pad_actions is not None and not 0 < self.action_dim <= pad_actions:
            raise DatasetFormatError(f"feature cache {root} holds actions of {self.action_dim} entries per frame, "
                                     f"which cannot be padded to {pad_actions}")

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from einops import rearrange

        from lavid.data.actions import pad_actions

        with_actions = self.pad_actions is not None
        rows = read_rows(self.table, index, 1, ["features", "actions"] if with_actions else ["features"])
        features = torch.from_numpy(np.array(rows["features"][0], dtype=np.float32))
        if self.max_steps is not None:
            features = features[: self.max_steps]
        item = {"features": features, "index": index}
        if with_actions:
            actions = torch.from_numpy(np.array(rows["actions"][0], dtype=np.float32))  # [T, r*A_cache]
            actions = rearrange(actions, "t (r a) -> t r a", r=self.frame_stride)
            actions = rearrange(pad_actions(actions, self.pad_actions), "t r a -> t (r a)")
            frames_per_step = int(self.meta["frames"]) // int(self.meta["shape"][0])
            item["actions"] = actions[: features.shape[0] * frames_per_step]
        return item
