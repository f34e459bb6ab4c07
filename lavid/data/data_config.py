"""The data stage's config: which datasets (or feature cache) to read, and how to cut and split their clips."""

from __future__ import annotations

from dataclasses import dataclass

from lavid.core.config import ConfigError, check

DEFAULT_DATA = "data/mix"
"""The embedded default: built with ``data_prep/dmc.py --preset mix`` on first use when missing."""


@dataclass
class DataConfig:
    """Attributes:
        data: one dataset folder, or a weighted mix ``path:weight,path:weight`` (videos and simulator
            clips alike). Weights are relative sampling rates (default 1 each).
        features: a feature cache made by ``data_prep/encode.py`` to train from instead of frames
            (frozen encoder only).
        frames: frames per training clip (the first ``frames`` kept frames of each stored clip).
        frame_stride: keep every ``frame_stride``-th stored frame (a clip then needs
            ``frames × frame_stride`` stored frames); a kept frame's action is the ``frame_stride`` stored
            actions up to the next kept frame, concatenated.
        holdout_fraction: share of episodes (videos) held out for evaluation, in every task / camera /
            policy (video sub-folder) with two episodes or more, chosen by a hash of the episode's own
            name (not the dataset's path), so train and held-out clips never share an episode and a
            moved dataset keeps its split (:func:`lavid.data.clips.split_by_episode`).
        num_workers: DataLoader workers per process.
        build_default: build the default dataset when ``data`` is the default and missing.

    ``data=PATH`` on the command line is short for ``data.data=PATH``.
    """

    SHORTHAND = "data"

    data: str = DEFAULT_DATA
    features: str | None = None
    frames: int = 8
    frame_stride: int = 1
    holdout_fraction: float = 0.1
    num_workers: int = 2
    build_default: bool = True

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.frames >= 2, f"{key}frames", f"needs at least 2 frames, got {self.frames}")
        check(self.frame_stride >= 1, f"{key}frame_stride", f"must be >= 1, got {self.frame_stride}")
        check(0.0 <= self.holdout_fraction < 1.0, f"{key}holdout_fraction", "must be in [0, 1)")
        check(self.num_workers >= 0, f"{key}num_workers", "must be >= 0")
        self.sources()  # parse errors surface now

    def sources(self) -> list[tuple[str, float]]:
        """``[(path, weight)]`` parsed from ``data``."""
        parts = [p.strip() for p in self.data.split(",") if p.strip()]
        if not parts:
            raise ConfigError("data.data: no dataset given")
        sources = []
        for part in parts:
            path, weight = part, 1.0
            head, sep, tail = part.rpartition(":")
            if sep and head:
                try:
                    path, weight = head, float(tail)
                except ValueError:
                    path, weight = part, 1.0
            if weight <= 0:
                raise ConfigError(f"data.data: weight of {path} must be > 0, got {weight}")
            sources.append((path, weight))
        return sources
