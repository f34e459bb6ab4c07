"""Turn a pile of videos into a clip dataset (index only, or with decoded frames materialized).

Each video is probed (and decoded with ``materialize``) in a worker; one that cannot be used is
recorded in the skip report with its reason and the run goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from lavid.data.sources import list_sources, read_source
from lavid.data.store import (
    ChunkedWriter,
    ItemResult,
    StoreError,
    clip_features,
    episode_features,
    fingerprint_sources,
    prepare_output,
    read_meta,
)
from lavid.data.video import VideoError, decode_clip, probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoIndexConfig:
    """How videos are cut into clips.

    Attributes:
        fps: frames per second of the clips (resampled by timestamps); 0 keeps each video's frames.
        clip_len: frames per clip.
        stride: frames between the starts of consecutive clips (default ``clip_len``: no overlap).
        size: clip frames are ``size × size`` (short side resized, then center crop).
        materialize: also decode and store the frames (uint8) in the dataset.
    """

    fps: float = 4.0
    clip_len: int = 16
    stride: int | None = None
    size: int = 64
    materialize: bool = False

    def __post_init__(self) -> None:
        if self.fps < 0:
            raise ValueError(f"fps must be >= 0 (0 keeps the source frame rate), got {self.fps}")
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {self.clip_len}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")

    @property
    def step(self) -> int:
        return self.stride or self.clip_len


def features(config: VideoIndexConfig) -> dict[str, Any]:
    """``datasets.Features`` of each table of a video dataset."""
    import datasets

    value = datasets.Value
    tables = {
        "clips": clip_features(),
        "episodes": episode_features("video"),
    }
    if config.materialize:
        tables["steps"] = datasets.Features(
            {
                "frame": datasets.Array3D(shape=(3, config.size, config.size), dtype="uint8"),
                "step": value("int32"),
            }
        )
    return tables


def index_video(source: str, config: VideoIndexConfig) -> ItemResult:
    """Probe one video and cut it into clips; never raises for a bad video (it is reported instead)."""
    try:
        video = read_source(source)
        info = probe(video)
        fps = config.fps or None
        available = info.num_resampled(fps)
        if available < config.clip_len:
            rate = f"{config.fps:g} fps" if fps else "native fps"
            raise VideoError(
                "too short", f"{available} frames at {rate} ({info.duration:.2f} s) < clip_len {config.clip_len}"
            )
        starts = range(0, available - config.clip_len + 1, config.step)
        clips = [
            {
                "source": source,
                "start_frame": start,
                "start": start / config.fps if fps else float(start),
                "fps": float(config.fps),
                "num_frames": config.clip_len,
            }
            for start in starts
        ]
        episode = {
            "source": source,
            "num_frames": available,
            "duration": info.duration,
            "src_fps": info.avg_fps,
            "src_frames": info.num_frames,
            "width": info.width,
            "height": info.height,
            "rotation": info.rotation,
            "codec": info.codec,
        }
        steps = None
        if config.materialize:
            import numpy as np

            frames = decode_clip(video, 0.0, available, fps, config.size, info=info)
            steps = {"frame": frames, "step": np.arange(available, dtype=np.int32)}
        return ItemResult(source, clips=clips, episode=episode, steps=steps)
    except VideoError as error:
        return ItemResult(source, skip={"reason": error.reason, "detail": error.detail})
    except Exception as error:  # a decoder bug on one file must not end a long indexing run
        return ItemResult(source, skip={"reason": "error", "detail": f"{type(error).__name__}: {error}"})


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def build_video_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    config: VideoIndexConfig = VideoIndexConfig(),
    workers: int = 0,
    overwrite: bool = False,
    split: str = "train",
    chunk_items: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Index (and optionally materialize) every video of ``src`` into the dataset folder ``out``.

    Resumable: rerunning after a kill continues where the committed chunks end; rerunning on a finished
    folder with the same arguments does nothing.

    Args:
        src: folder, list file or dataset of videos (see :func:`lavid.data.sources.list_sources`).
        out: output folder.
        config: clip parameters.
        workers: processes probing/decoding in parallel (0: in this process).
        overwrite: discard whatever ``out`` holds and start again.
        split: split for dataset sources.
        chunk_items: videos per committed chunk (the most work a kill can lose).
        progress: show a progress bar.

    Returns:
        The dataset's metadata (``lavid.json``), with counts and ``skip_reasons``.
    """
    from tqdm.auto import tqdm

    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    sources = list_sources(src, split=split)
    params = {"kind": "video", **asdict(config), "sources": fingerprint_sources(sources), "num_sources": len(sources)}
    if prepare_output(out, params, overwrite=overwrite) == "done":
        meta = read_meta(out)
        log.info("%s is already complete: nothing to do", out)
        return {**meta, "already_complete": True}
    writer = ChunkedWriter(out, params, features(config), chunk_items=chunk_items)
    todo = sources[writer.items_done :]
    work = partial(index_video, config=config)
    bar = tqdm(total=len(sources), initial=writer.items_done, unit="video", desc="indexing", disable=not progress)
    if workers == 0:
        results = map(work, todo)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
        results = pool.imap(work, todo, chunksize=1)  # ordered: committed chunks stay a prefix
    try:
        for result in results:
            writer.add(result)
            bar.update(1)
            if result.skip:
                bar.set_postfix_str(f"skipped {os.path.basename(result.source)}: {result.skip['reason']}")
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    meta = writer.finalize({"kind": "video", **asdict(config), "materialized": config.materialize})
    return meta


def skip_summary(out: str | os.PathLike) -> Counter:
    """Count skipped inputs by reason from ``out/skipped.jsonl``."""
    import json

    counts: Counter = Counter()
    path = os.path.join(out, "skipped.jsonl")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                counts[json.loads(line)["reason"]] += 1
    return counts


__all__ = ["VideoIndexConfig", "build_video_dataset", "index_video", "skip_summary", "StoreError"]
