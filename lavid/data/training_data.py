"""Training and held-out clips from one dataset or a weighted mix (frames, or cached features)."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from lavid.data.clips import ClipDataset, DatasetFormatError, FeatureDataset, open_meta, split_by_episode
from lavid.data.data_config import DEFAULT_DATA, DataConfig
from lavid.data.store import is_complete

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


MODEL_INPUTS = ("frames", "features", "actions")
"""Keys of a training batch that are keyword inputs of :class:`lavid.models.world_model.LatentActionWorldModel`."""


@dataclass
class TrainingData:
    """Attributes:
        train, heldout: datasets yielding ``{"frames": [T, 3, H, W] uint8}`` or ``{"features": [S, N, D]}``,
            plus ``"actions": [T, r·A] float32`` when the model is conditioned on actions, and ``"index"``.
        weights: per-item sampling weights of ``train`` (``None``: uniform).
        kind: ``frames`` or ``features``.
    """

    train: Dataset
    heldout: Dataset
    weights: torch.Tensor | None
    kind: str


class ModelInputs(Dataset):
    """A :class:`ClipDataset`'s items as the model's inputs: ``frames [T, 3, H, W]`` uint8, ``index``, and,
    when the clips carry them, ``actions [T, r·A]`` float32 (the stored ``action`` column, strided and padded)."""

    def __init__(self, clips: ClipDataset) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.clips[index]
        out = {"frames": item["frames"], "index": item["index"]}
        if "action" in item:
            out["actions"] = item["action"].float()
        return out


def no_actions_error(path: str) -> DatasetFormatError:
    return DatasetFormatError(
        f"model.condition=action needs the true actions of every clip, but {path} has none (a video dataset?); "
        "use model.condition=latent, or leave it out of data.data"
    )


def ensure_default_data(config: DataConfig) -> None:
    """Build the embedded default dataset (``data_prep/dmc.py --preset mix``) when it is asked for and missing."""
    if config.data != DEFAULT_DATA or not config.build_default or is_complete(DEFAULT_DATA):
        return
    log.info("building the default dataset %s (about 4 minutes on 2 CPU cores)", DEFAULT_DATA)
    command = [sys.executable, str(REPO / "data_prep" / "dmc.py"), "--preset", "mix", "--out", DEFAULT_DATA]
    result = subprocess.run(command)
    if result.returncode != 0:
        raise RuntimeError(f"building the default dataset failed: {' '.join(command)}")


def _check_source(path: str) -> None:
    if not Path(path).exists():
        raise DatasetFormatError(
            f"dataset {path} does not exist; build it with data_prep/videos.py or data_prep/dmc.py"
        )


def _cache_without_actions(path: str, meta: dict[str, Any]) -> DatasetFormatError:
    lacking = meta.get("without_actions") or []
    if lacking:
        return DatasetFormatError(f"{no_actions_error(lacking[0])} (feature cache {path} was made from it)")
    return DatasetFormatError(f"feature cache {path} holds no actions (made before caches stored them?); "
                              "model.condition=action needs them: rebuild it with data_prep/encode.py")


def source_action_dims(config: DataConfig) -> dict[str, int | None]:
    """Per dataset of ``config.data``: its largest action size per stored frame (``None``: no actions)."""
    dims = {}
    for path, _ in config.sources():
        _check_source(path)
        dims[path] = ClipDataset(path, columns=[]).action_dim
    return dims


def data_action_dim(config: DataConfig) -> int:
    """The largest action size per stored frame of the training data: the feature cache's when there is one,
    else the largest among the sources. Every source must have actions.

    Raises:
        DatasetFormatError: a source (or the feature cache) without actions.
    """
    if config.features:
        _check_source(config.features)
        meta = open_meta(config.features)
        found = int(meta.get("action_dim") or 0)
        if not found:
            raise _cache_without_actions(config.features, meta)
        return found
    dims = source_action_dims(config)
    for path, dim in dims.items():
        if dim is None:
            raise no_actions_error(path)
    return max(dims.values())


def build_training_data(config: DataConfig, tubelet: int, pad_actions: int | None = None) -> TrainingData:
    """Open every source, split each by episode into train / held out, and weight the mix.

    Args:
        config: the data config (sources, frames, frame stride, feature cache).
        tubelet: frames per model step.
        pad_actions: also yield ``actions`` (each frame's action zero-padded to this size), for a model
            conditioned on actions; ``None`` reads frames (or features) only.
    """
    sources = config.sources()
    if config.features:
        return _feature_data(config, sources, tubelet, pad_actions)
    columns = ["action"] if pad_actions is not None else []
    trains, heldouts, weights = [], [], []
    for path, weight in sources:
        _check_source(path)
        dataset = ClipDataset(path, columns=columns, max_frames=config.frames, frame_stride=config.frame_stride,
                              pad_actions=pad_actions)
        if len(dataset) == 0:
            raise DatasetFormatError(f"dataset {path} has no clips")
        if pad_actions is not None and dataset.action_dim is None:
            raise no_actions_error(path)
        clip_frames = min(dataset.clips["num_frames"])
        needed = config.frames * config.frame_stride
        if clip_frames < needed:
            stride = f" x data.frame_stride={config.frame_stride}" if config.frame_stride > 1 else ""
            raise DatasetFormatError(f"clips of {path} have {clip_frames} frames; data.frames={config.frames}{stride} "
                                     f"needs {needed}")
        train, heldout = split_by_episode(list(dataset.clips["source"]), config.holdout_fraction)
        if not train:
            raise DatasetFormatError(f"dataset {path} leaves no training clips after the held-out split")
        inputs = ModelInputs(dataset)
        trains.append(Subset(inputs, train))
        heldouts.append(Subset(inputs, heldout or train[:1]))
        weights.append(torch.full((len(train),), weight / len(train)))
    uniform = len({w for _, w in sources}) == 1 and len(sources) == 1
    return TrainingData(ConcatDataset(trains), ConcatDataset(heldouts), None if uniform else torch.cat(weights),
                        "frames")


def _feature_data(config: DataConfig, sources: list[tuple[str, float]], tubelet: int,
                  pad_actions: int | None) -> TrainingData:
    meta = open_meta(config.features)
    if meta.get("kind") == "features":  # else FeatureDataset says what it is
        if int(meta.get("frame_stride", 1)) != config.frame_stride:
            raise DatasetFormatError(f"feature cache {config.features} was made with frame stride "
                                     f"{meta.get('frame_stride', 1)}, not data.frame_stride={config.frame_stride}; "
                                     "rebuild it with data_prep/encode.py")
        if int(meta.get("frames", config.frames)) < config.frames:
            raise DatasetFormatError(f"feature cache {config.features} holds clips of {meta['frames']} frames; "
                                     f"data.frames={config.frames} needs more")
        if pad_actions is not None and not int(meta.get("action_dim") or 0):
            raise _cache_without_actions(config.features, meta)
    cache = FeatureDataset(config.features, max_steps=config.frames // tubelet, pad_actions=pad_actions)
    if cache.meta.get("data") != config.data:
        raise DatasetFormatError(
            f"feature cache {config.features} was made from data={cache.meta.get('data')!r}, not {config.data!r}"
        )
    dataset_of, source_of = cache.table["dataset"], cache.table["source"]
    train, heldout = [], []
    for path in dict.fromkeys(dataset_of):  # each dataset split exactly as its clips are when not cached
        rows = [i for i, d in enumerate(dataset_of) if d == path]
        side_train, side_heldout = split_by_episode([source_of[i] for i in rows], config.holdout_fraction)
        train += [rows[j] for j in side_train]
        heldout += [rows[j] for j in side_heldout]
    train.sort()
    heldout.sort()
    weight_of = dict(sources)
    counts: dict[str, int] = {}
    for i in train:
        counts[dataset_of[i]] = counts.get(dataset_of[i], 0) + 1
    weights = torch.tensor([weight_of[dataset_of[i]] / counts[dataset_of[i]] for i in train])
    uniform = len(sources) == 1
    return TrainingData(Subset(cache, train), Subset(cache, heldout or train[:1]), None if uniform else weights,
                        "features")
