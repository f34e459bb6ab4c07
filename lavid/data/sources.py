"""Where videos come from: a folder, a CSV or text list of paths, or a ``datasets`` dataset.

Every source is listed as a deterministic, ordered list of *source strings*: a file path, or for videos
stored as bytes inside a dataset, a reference ``dataset:<location>#<column>/<row>`` that
:func:`read_source` turns back into bytes in any process.
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

from lavid.data.video import VideoSource

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".ogv", ".3gp", ".gif"}
)
LIST_EXTENSIONS = frozenset({".csv", ".txt", ".lst", ".list"})
PATH_COLUMNS = ("path", "video_path", "file", "filename", "video")
BYTES_COLUMNS = ("bytes", "video_bytes", "video", "content")
DATASET_PREFIX = "dataset:"
HUB_PREFIX = "hub:"


class SourceError(Exception):
    """The source itself is unusable (missing, empty, unsupported): a clear error before any work."""


def list_sources(src: str | os.PathLike, split: str = "train") -> list[str]:
    """List the videos of ``src`` in a deterministic order.

    Args:
        src: a folder (searched recursively for video extensions), a ``.csv`` (column ``path`` or the
            first column) or text list (one path per line; ``#`` comments), a single video file, a
            folder written by ``datasets.Dataset.save_to_disk`` with a path or bytes column, or the name
            of a hub dataset (needs a network).
        split: split to use for hub datasets and ``DatasetDict`` folders.

    Returns:
        Source strings: absolute paths, or ``dataset:`` references for bytes columns.

    Raises:
        SourceError: ``src`` does not exist, is unsupported, or lists no video.
    """
    path = Path(src).expanduser()
    if path.is_dir():
        if _is_saved_dataset(path):
            sources = _list_dataset(str(path.resolve()), split)
        else:
            sources = _list_folder(path)
            if not sources:
                raise SourceError(
                    f"no videos found in folder {path} (looked recursively for {', '.join(sorted(VIDEO_EXTENSIONS))})"
                )
    elif path.is_file():
        if path.suffix.lower() in LIST_EXTENSIONS:
            sources = _list_file(path)
        else:
            sources = [str(path.resolve())]
    elif "/" in str(src) and not str(src).startswith(("/", ".", "~")) and not path.parent.exists():
        sources = _list_dataset(HUB_PREFIX + str(src), split)
    else:
        raise SourceError(f"source {src} does not exist")
    if not sources:
        raise SourceError(f"source {src} lists no videos")
    return sources


def _list_folder(root: Path) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(root, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                found.append(str((Path(directory) / name).resolve()))
    return found


def _list_file(path: Path) -> list[str]:
    base = path.resolve().parent
    entries: list[str] = []
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise SourceError(f"CSV list {path} has no header row")
            column = next((c for c in PATH_COLUMNS if c in reader.fieldnames), reader.fieldnames[0])
            entries = [row[column].strip() for row in reader if row.get(column, "").strip()]
        else:
            entries = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    return [str((base / Path(entry).expanduser()).resolve()) for entry in entries]


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


@functools.lru_cache(maxsize=8)
def _load_dataset(location: str, split: str):
    """A ``datasets.Dataset`` from a saved folder or, with a ``hub:`` prefix, a hub name."""
    import datasets

    try:
        if location.startswith(HUB_PREFIX):
            return datasets.load_dataset(location[len(HUB_PREFIX) :], split=split)
        loaded = datasets.load_from_disk(location)
    except Exception as error:  # network errors, missing files: say which source failed
        raise SourceError(f"cannot load dataset {location!r}: {type(error).__name__}: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise SourceError(f"dataset {location} has no split {split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[split]
    return loaded


def _video_column(dataset, location: str) -> tuple[str, str]:
    """``(column, kind)`` where kind is ``"path"`` or ``"bytes"``."""
    import datasets

    for name in dataset.column_names:
        feature = dataset.features[name]
        if isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary") and name in BYTES_COLUMNS:
            return name, "bytes"
        if isinstance(feature, dict) and "bytes" in feature and name in BYTES_COLUMNS:
            return name, "bytes"
    for name in PATH_COLUMNS:
        if name in dataset.column_names and dataset.features[name] == datasets.Value("string"):
            return name, "path"
    raise SourceError(
        f"dataset {location} has no video column: need a string column named one of {PATH_COLUMNS} "
        f"or a bytes column named one of {BYTES_COLUMNS}; it has {dataset.column_names}"
    )


def _list_dataset(location: str, split: str) -> list[str]:
    dataset = _load_dataset(location, split)
    column, kind = _video_column(dataset, location)
    if kind == "path":
        base = Path(location).parent if not location.startswith(HUB_PREFIX) else Path.cwd()
        return [str((base / Path(p).expanduser()).resolve()) for p in dataset[column] if p]
    return [f"{DATASET_PREFIX}{location}?split={split}#{column}/{row}" for row in range(len(dataset))]


def read_source(source: str) -> VideoSource:
    """Turn a source string back into something the decoders read: a path or the video's bytes."""
    if not source.startswith(DATASET_PREFIX):
        return source
    location_split, _, column_row = source[len(DATASET_PREFIX) :].rpartition("#")
    location, _, split = location_split.rpartition("?split=")
    column, _, row = column_row.rpartition("/")
    value = _load_dataset(location, split)[int(row)][column]
    if isinstance(value, dict):  # datasets' Video/Image-like features: {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    return value if value is not None else b""
