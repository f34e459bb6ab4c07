"""Listing videos from folders, list files and datasets; reading them back."""

from __future__ import annotations

import os

import pytest

from conftest import BAD_VIDEOS, GOOD_VIDEOS
from lavid.data.sources import SourceError, list_sources, read_source
from lavid.data.video import probe


def test_folder_is_recursive_sorted_and_filters_extensions(video_dir):
    sources = list_sources(video_dir)
    names = [os.path.basename(s) for s in sources]
    assert sorted(names) == sorted(GOOD_VIDEOS + list(BAD_VIDEOS))
    assert "notes.txt" not in names
    assert sources == list_sources(video_dir)  # deterministic
    assert all(os.path.isabs(s) for s in sources)


def test_csv_and_text_lists_resolve_relative_paths(video_dir, tmp_path):
    (tmp_path / "list.csv").write_text(f"path,label\n{video_dir}/a_h264.mp4,x\nrel.mp4,y\n")
    (tmp_path / "rel.mp4").write_bytes((video_dir / "a_h264.mp4").read_bytes())
    assert list_sources(tmp_path / "list.csv") == [str(video_dir / "a_h264.mp4"), str(tmp_path / "rel.mp4")]
    (tmp_path / "list.txt").write_text(f"# comment\n\n{video_dir}/b_vp9.webm\nrel.mp4\n")
    assert list_sources(tmp_path / "list.txt") == [str(video_dir / "b_vp9.webm"), str(tmp_path / "rel.mp4")]


def test_dataset_with_path_column_and_with_bytes_column(video_dir, tmp_path):
    import datasets

    paths = [str(video_dir / "a_h264.mp4"), str(video_dir / "b_vp9.webm")]
    datasets.Dataset.from_dict({"path": paths}).save_to_disk(str(tmp_path / "by_path"))
    assert list_sources(tmp_path / "by_path") == paths

    blobs = [open(p, "rb").read() for p in paths]
    datasets.Dataset.from_dict({"video": blobs, "caption": ["a", "b"]}).save_to_disk(str(tmp_path / "by_bytes"))
    sources = list_sources(tmp_path / "by_bytes")
    assert len(sources) == 2 and all(s.startswith("dataset:") for s in sources)
    assert read_source(sources[1]) == blobs[1]
    assert probe(read_source(sources[0])).num_frames == 150


def test_dataset_without_video_column_is_a_clear_error(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"caption": ["a"]}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(SourceError, match="no video column"):
        list_sources(tmp_path / "d")


def test_empty_or_missing_source_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no videos found"):
        list_sources(tmp_path / "empty")
    with pytest.raises(SourceError, match="does not exist"):
        list_sources(tmp_path / "missing")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(SourceError, match="lists no videos"):
        list_sources(tmp_path / "empty.txt")
