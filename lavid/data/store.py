"""The on-disk clip dataset format, and a resumable writer for it.

A lavid dataset is a folder::

    OUT/lavid.json      what built it (kind, fps, size, clip_len, parameters) and the counts
    OUT/clips/          datasets.Dataset, one row per clip: source, episode, start_frame, start, fps, num_frames…
    OUT/episodes/       datasets.Dataset, one row per video or simulator episode: source, num_steps, first_row…
    OUT/steps/          datasets.Dataset, one row per stored frame (materialized videos, trajectories):
                        frame [3, H, W] uint8 (+ action, reward, state… for trajectories)
    OUT/skipped.jsonl   one JSON object per skipped input: source, reason, detail

A clip is ``num_frames`` consecutive steps of one episode, so clips are cut from stored episodes without
copying frames. A clip index without ``steps/`` decodes its frames from ``source`` when read.

Writing is resumable. Items (videos, episodes) are processed in a fixed order; their rows are buffered
and committed in chunks, each written to a temporary folder and renamed into ``OUT/.work`` (atomic).
After a kill, the committed chunks form a prefix of the item list and a rerun continues after it; the
chunks are joined into the final datasets only at the end. The result equals an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

FORMAT = "lavid-clips"
FORMAT_VERSION = 1
META_FILE = "lavid.json"
SKIPPED_FILE = "skipped.jsonl"
TABLES = ("clips", "episodes", "steps")
WORK_DIR = ".work"


def clip_features():
    """``datasets.Features`` of the ``clips`` table, shared by videos and trajectories."""
    import datasets

    return datasets.Features(
        {
            "source": datasets.Value("string"),
            "episode": datasets.Value("int64"),
            "start_frame": datasets.Value("int64"),
            "start": datasets.Value("float64"),
            "fps": datasets.Value("float32"),
            "num_frames": datasets.Value("int32"),
        }
    )


EPISODE_KEYS = {"source": "string", "episode": "int64", "first_row": "int64", "num_steps": "int64"}
"""The columns every ``episodes`` table has: where the episode came from, its index, and its rows of
``steps/`` (``episode``, ``first_row`` and ``num_steps`` are filled in by :class:`ChunkedWriter`)."""

EPISODE_COLUMNS = {
    "video": {
        "num_frames": "int64", "duration": "float64", "src_fps": "float64", "src_frames": "int64",
        "width": "int32", "height": "int32", "rotation": "int32", "codec": "string",
    },
    "trajectory": {
        "task": "string", "camera": "string", "seed": "int64", "policy": "string", "return": "float32",
        "fps": "float32", "action_dim": "int32", "state_dim": "int32",
    },
}
"""Each dataset kind's own ``episodes`` columns (``{name: datasets.Value dtype}``) beside
:data:`EPISODE_KEYS`: what the video probe found (usable frames at the dataset's fps, the file's duration,
rate, frame count, size, rotation and codec), or how the simulator episode was made (task, camera, seed,
policy, return, fps, action and state sizes)."""


def episode_features(kind: str):
    """``datasets.Features`` of the ``episodes`` table (one row per video or simulator episode) of a dataset
    of ``kind`` (``"video"`` or ``"trajectory"``): :data:`EPISODE_KEYS`, then ``EPISODE_COLUMNS[kind]``."""
    import datasets

    columns = {**EPISODE_KEYS, **EPISODE_COLUMNS[kind]}
    return datasets.Features({name: datasets.Value(dtype) for name, dtype in columns.items()})


class StoreError(Exception):
    """The output folder cannot be used as asked (unwritable, built with other parameters, ...)."""


@dataclass
class ItemResult:
    """Everything one input item (a video or an episode) contributes to the dataset.

    Attributes:
        source: the item's source string (for the skip report and the episode row).
        clips: clip rows; ``episode`` and ``start_frame`` are filled in by the writer.
        episode: the episode row, or ``None`` when the item was skipped.
        steps: per-step columns (each a list or array with one entry per step), or ``None``.
        skip: ``{"reason", "detail"}`` when the item was skipped.
    """

    source: str
    clips: list[dict[str, Any]] = field(default_factory=list)
    episode: dict[str, Any] | None = None
    steps: dict[str, Any] | None = None
    skip: dict[str, str] | None = None

    @property
    def num_steps(self) -> int:
        if not self.steps:
            return 0
        return len(next(iter(self.steps.values())))

    def nbytes(self) -> int:
        total = 0
        for column in (self.steps or {}).values():
            total += getattr(column, "nbytes", 0) or 8 * len(column)
        return total + 256 * (len(self.clips) + 1)


def fingerprint_sources(sources: Iterable[str]) -> str:
    """A short hash of an ordered source list (a rerun must see the same list to resume)."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def read_meta(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(out_dir) / META_FILE
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def is_complete(out_dir: str | os.PathLike) -> bool:
    meta = read_meta(out_dir)
    return bool(meta and meta.get("complete"))


def check_writable(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and prove a file can be written there, before any work."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".lavid-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise StoreError(f"output folder {out} is not writable: {error.strerror or error}") from None
    return out


@contextlib.contextmanager
def _quiet_datasets():
    """Hide ``datasets``' own progress bars while saving small internal pieces."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ChunkedWriter:
    """Commit :class:`ItemResult` s in atomic chunks; join them into the final dataset.

    Args:
        out_dir: the dataset folder.
        params: everything that determines the output (kind, fps, size, source fingerprint...). A rerun
            with different ``params`` on the same folder is refused rather than mixed.
        features: ``{table: datasets.Features}`` for the tables this dataset has.
        chunk_items: commit after this many items...
        chunk_bytes: ...or once the buffered rows hold about this many bytes.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        params: dict[str, Any],
        features: dict[str, Any],
        chunk_items: int = 64,
        chunk_bytes: int = 256 * 2**20,
    ) -> None:
        self.out = Path(out_dir)
        self.work = self.out / WORK_DIR
        self.params = params
        self.features = features
        self.chunk_items = chunk_items
        self.chunk_bytes = chunk_bytes
        self._buffer: list[ItemResult] = []
        self._buffer_bytes = 0
        self._open_work_dir()
        self.items_done, self.episodes_done, self.rows_done = self._committed_counts()

    def _open_work_dir(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        params_path = self.work / "params.json"
        if params_path.exists():
            with open(params_path, encoding="utf-8") as handle:
                previous = json.load(handle)
            if previous != json.loads(json.dumps(self.params)):
                changed = sorted(k for k in set(previous) | set(self.params) if previous.get(k) != self.params.get(k))
                raise StoreError(
                    f"{self.out} holds an unfinished build with other parameters ({', '.join(changed)} differ); "
                    "rerun with the same arguments to resume, or use --overwrite to start again"
                )
        else:
            _write_json_atomic(params_path, self.params)

    def _chunks(self) -> list[Path]:
        return sorted(p for p in self.work.glob("chunk-*") if p.is_dir() and not p.name.endswith(".tmp"))

    def _committed_counts(self) -> tuple[int, int, int]:
        items = episodes = rows = 0
        for chunk in self._chunks():
            with open(chunk / "chunk.json", encoding="utf-8") as handle:
                info = json.load(handle)
            if info["first_item"] != items:
                raise StoreError(f"{chunk} does not continue the committed items; remove {self.work} and rerun")
            items, episodes, rows = info["end_item"], episodes + info["episodes"], rows + info["rows"]
        return items, episodes, rows

    def add(self, result: ItemResult) -> None:
        """Buffer one item's rows (in item order); commits a chunk when the buffer is full."""
        self._buffer.append(result)
        self._buffer_bytes += result.nbytes()
        if len(self._buffer) >= self.chunk_items or self._buffer_bytes >= self.chunk_bytes:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered items as one chunk (atomically)."""
        if not self._buffer:
            return
        import datasets

        first, end = self.items_done, self.items_done + len(self._buffer)
        tables: dict[str, dict[str, list]] = {name: {} for name in self.features}
        skipped, episodes, rows = [], self.episodes_done, self.rows_done
        for result in self._buffer:
            if result.skip is not None or result.episode is None:
                skipped.append({"source": result.source, **(result.skip or {"reason": "skipped", "detail": ""})})
                continue
            episode_row = {**result.episode, "episode": episodes, "first_row": rows, "num_steps": result.num_steps}
            _append_row(tables, "episodes", episode_row)
            for clip in result.clips:
                _append_row(tables, "clips", {**clip, "episode": episodes})
            if result.steps and "steps" in tables:
                for key, values in result.steps.items():
                    tables["steps"].setdefault(key, []).append(values)
            episodes += 1
            rows += result.num_steps
        tmp = self.work / f"chunk-{first:09d}-{end:09d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        tables["steps"] = {key: _concat(parts) for key, parts in tables.get("steps", {}).items()}
        with _quiet_datasets():
            for name, features in self.features.items():
                if tables[name]:  # an all-skipped chunk has no rows (and datasets can't reload 0 shards)
                    datasets.Dataset.from_dict(tables[name], features=features).save_to_disk(str(tmp / name))
        with open(tmp / SKIPPED_FILE, "w", encoding="utf-8") as handle:
            for record in skipped:
                handle.write(json.dumps(record) + "\n")
        info = {"first_item": first, "end_item": end, "episodes": episodes - self.episodes_done, "rows": rows - self.rows_done}
        _write_json_atomic(tmp / "chunk.json", info)
        os.replace(tmp, self.work / f"chunk-{first:09d}-{end:09d}")
        self.items_done, self.episodes_done, self.rows_done = end, episodes, rows
        self._buffer, self._buffer_bytes = [], 0

    def finalize(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Join the committed chunks into ``OUT/<table>``, write the skip report and ``lavid.json``.

        Returns:
            The written metadata, with counts.
        """
        import datasets

        self.flush()
        chunks = self._chunks()
        counts: dict[str, int] = {}
        for name, features in self.features.items():
            parts = [datasets.load_from_disk(str(chunk / name)) for chunk in chunks if (chunk / name).exists()]
            joined = datasets.concatenate_datasets(parts) if parts else datasets.Dataset.from_dict(
                {key: [] for key in features}, features=features
            )
            counts[name] = len(joined)
            target, tmp = self.out / name, self.out / f"{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            with _quiet_datasets():
                joined.save_to_disk(str(tmp), max_shard_size="500MB")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        skip_tmp = self.out / (SKIPPED_FILE + ".tmp")
        skipped = 0
        with open(skip_tmp, "w", encoding="utf-8") as out_handle:
            for chunk in chunks:
                with open(chunk / SKIPPED_FILE, encoding="utf-8") as handle:
                    for line in handle:
                        out_handle.write(line)
                        skipped += 1
        os.replace(skip_tmp, self.out / SKIPPED_FILE)
        counts["skipped"] = skipped
        counts["items"] = self.items_done
        full = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            **meta,
            "params": self.params,
            "counts": counts,
            "tables": sorted(self.features),
            "complete": True,
        }
        _write_json_atomic(self.out / META_FILE, full)
        shutil.rmtree(self.work, ignore_errors=True)
        return full


def _append_row(tables: dict[str, dict[str, list]], name: str, row: dict[str, Any]) -> None:
    if name not in tables:
        return
    for key, value in row.items():
        tables[name].setdefault(key, []).append(value)


def _concat(parts: list[Any]) -> Any:
    """Join per-item step columns: numpy blocks stay one array (fast Arrow conversion)."""
    import numpy as np

    if all(isinstance(part, np.ndarray) for part in parts) and len({part.shape[1:] for part in parts}) == 1:
        return np.concatenate(parts)
    return [value for part in parts for value in part]  # rows of different sizes (mixed tasks)


def prepare_output(out_dir: str | os.PathLike, params: dict[str, Any], overwrite: bool = False) -> str:
    """Decide what to do with ``out_dir`` before any work.

    Returns:
        ``"done"`` when it already holds a complete dataset built with ``params`` (nothing to do),
        ``"build"`` otherwise (fresh or resumable).

    Raises:
        StoreError: it is not writable, or holds a dataset built with other parameters.
    """
    out = check_writable(out_dir)
    meta = read_meta(out)
    if overwrite:
        for name in (*TABLES, WORK_DIR, META_FILE, SKIPPED_FILE):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        return "build"
    if meta and meta.get("complete"):
        if meta.get("params") == json.loads(json.dumps(params)):
            return "done"
        changed = sorted(
            k for k in set(meta.get("params", {})) | set(params) if meta.get("params", {}).get(k) != params.get(k)
        )
        raise StoreError(
            f"{out} already holds a dataset built with other parameters ({', '.join(changed)} differ); "
            "use another output folder or --overwrite"
        )
    return "build"
