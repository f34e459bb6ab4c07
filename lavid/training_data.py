"""Training and held-out clips from one dataset or a weighted mix (frames, or cached features)."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from lavid.data import ClipDataset, DatasetFormatError, FeatureDataset, split_by_episode
from lavid.store import is_complete
from lavid.train_config import DEFAULT_DATA, DataConfig

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


@dataclass
class TrainingData:
    """Attributes:
        train, heldout: datasets yielding ``{"frames": [T, 3, H, W] uint8}`` or ``{"features": [S, N, D]}``.
        weights: per-item sampling weights of ``train`` (``None``: uniform).
        kind: ``frames`` or ``features``.
    """

    train: Dataset
    heldout: Dataset
    weights: torch.Tensor | None
    kind: str


def ensure_default_data(config: DataConfig) -> None:
    """Build the embedded default dataset (``data_prep/dmc.py --preset mix``) when it is asked for and missing."""
    if config.data != DEFAULT_DATA or not config.build_default or is_complete(DEFAULT_DATA):
        return
    log.info("building the default dataset %s (about 3 minutes on 2 CPU cores)", DEFAULT_DATA)
    command = [sys.executable, str(REPO / "data_prep" / "dmc.py"), "--preset", "mix", "--out", DEFAULT_DATA]
    result = subprocess.run(command)
    if result.returncode != 0:
        raise RuntimeError(f"building the default dataset failed: {' '.join(command)}")


def _check_source(path: str) -> None:
    if not Path(path).exists():
        raise DatasetFormatError(
            f"dataset {path} does not exist; build it with data_prep/videos.py or data_prep/dmc.py"
        )


def build_training_data(config: DataConfig, tubelet: int) -> TrainingData:
    """Open every source, split each by episode into train / held out, and weight the mix."""
    sources = config.sources()
    if config.features:
        return _feature_data(config, sources, tubelet)
    trains, heldouts, weights = [], [], []
    for path, weight in sources:
        _check_source(path)
        dataset = ClipDataset(path, columns=[], max_frames=config.frames)
        if len(dataset) == 0:
            raise DatasetFormatError(f"dataset {path} has no clips")
        clip_frames = min(dataset.clips["num_frames"])
        if clip_frames < config.frames:
            raise DatasetFormatError(f"clips of {path} have {clip_frames} frames; data.frames={config.frames} needs more")
        names = [f"{path}::{s}" for s in dataset.clips["source"]]
        train, heldout = split_by_episode(names, config.holdout_fraction)
        if not train:
            raise DatasetFormatError(f"dataset {path} leaves no training clips after the held-out split")
        trains.append(Subset(dataset, train))
        heldouts.append(Subset(dataset, heldout or train[:1]))
        weights.append(torch.full((len(train),), weight / len(train)))
    uniform = len({w for _, w in sources}) == 1 and len(sources) == 1
    return TrainingData(ConcatDataset(trains), ConcatDataset(heldouts), None if uniform else torch.cat(weights),
                        "frames")


def _feature_data(config: DataConfig, sources: list[tuple[str, float]], tubelet: int) -> TrainingData:
    cache = FeatureDataset(config.features, max_steps=config.frames // tubelet)
    if cache.meta.get("data") != config.data:
        raise DatasetFormatError(
            f"feature cache {config.features} was made from data={cache.meta.get('data')!r}, not {config.data!r}"
        )
    names = [f"{s}::{c}" for s, c in zip(cache.table["dataset"], cache.table["source"])]
    train, heldout = split_by_episode(names, config.holdout_fraction)
    dataset_of = cache.table["dataset"]
    weight_of = dict(sources)
    counts: dict[str, int] = {}
    for i in train:
        counts[dataset_of[i]] = counts.get(dataset_of[i], 0) + 1
    weights = torch.tensor([weight_of[dataset_of[i]] / counts[dataset_of[i]] for i in train])
    uniform = len(sources) == 1
    return TrainingData(Subset(cache, train), Subset(cache, heldout or train[:1]), None if uniform else weights,
                        "features")
