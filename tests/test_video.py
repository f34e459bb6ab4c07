"""Decoding real video files: shapes, timestamp-based resampling, rotation, backends, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BAD_VIDEOS, GOOD_VIDEOS, gray_level, write_video
from lavid.data.video import VideoError, decode_clip, probe, resample_indices


def _find(video_dir, name):
    return next(video_dir.rglob(name))


@pytest.mark.parametrize("name", GOOD_VIDEOS)
def test_decodes_containers_codecs_and_sizes(video_dir, name):
    path = _find(video_dir, name)
    info = probe(path)
    frames = decode_clip(path, start=0.0, num_frames=8, fps=4, size=64, info=info)
    assert frames.shape == (8, 3, 64, 64) and frames.dtype == np.uint8
    # 4 fps from any source rate: frame i shows source time i/4 -> a gray level rising linearly.
    span = info.timestamps[-1]
    expected = 200 * np.minimum(np.arange(8) / 4, span) / span
    assert np.abs(gray_level(frames) - expected).max() < 200 / info.num_frames + 4


def test_probe_reads_geometry_and_duration(video_dir):
    info = probe(_find(video_dir, "d_h264.mkv"))
    assert (info.width, info.height, info.rotation) == (1280, 720, 0)
    assert info.num_frames == 96
    assert info.duration == pytest.approx(4.0, abs=1e-3)
    assert info.num_resampled(4) == 16 and info.num_resampled(None) == 96


def test_variable_frame_rate_follows_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.4, 1.0, 1.05, 1.9, 2.0]
    path = write_video(tmp_path / "vfr.mp4", times=times, fps=30, width=128, height=128)
    info = probe(path)
    np.testing.assert_allclose(info.timestamps, times, atol=1e-3)
    # 4 fps targets 0, .25, .5, ... pick the last frame at or before each: 0, .15, .4, .4, 1.0, 1.05, 1.05, 1.05
    expected_source = [0.0, 0.15, 0.4, 0.4, 1.0, 1.05, 1.05, 1.05]
    for backend in ("decord", "pyav"):
        frames = decode_clip(path, 0.0, 8, fps=4, size=64, info=info, backend=backend)
        np.testing.assert_allclose(gray_level(frames), 200 * np.array(expected_source) / 2.0, atol=3)


def test_resample_indices_by_time_not_count():
    stamps = np.array([0.0, 0.5, 0.6, 0.7, 2.0])
    np.testing.assert_array_equal(resample_indices(stamps, 2.0, 0.0, 5), [0, 1, 3, 3, 4])
    np.testing.assert_array_equal(resample_indices(stamps, None, 1, 3), [1, 2, 3])


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_rotation_metadata_applied_identically_by_both_backends(tmp_path, rotation):
    path = write_video(tmp_path / f"rot{rotation}.mp4", fps=10, num_frames=10, width=160, height=96, rotation=rotation)
    info = probe(path)
    assert info.rotation == (-rotation) % 360
    full = decode_clip(path, 0.0, 1, fps=4, size=None, info=info, backend="pyav")
    expected_shape = (160, 96) if rotation in (90, -90) else (96, 160)
    assert full.shape[-2:] == expected_shape
    a = decode_clip(path, 0.0, 2, fps=4, size=48, info=info, backend="decord").astype(int)
    b = decode_clip(path, 0.0, 2, fps=4, size=48, info=info, backend="pyav").astype(int)
    assert np.abs(a - b).mean() < 2
    # The bright marker (top-left when stored) moves with the rotation.
    bright = np.argwhere(full[0, 0] > 240).mean(axis=0) / np.array(expected_shape)
    corner = {90: (1, 0), 180: (1, 1), -90: (0, 1)}[rotation]  # ffmpeg: positive = counter-clockwise
    assert np.all(np.abs(bright - np.array(corner)) < 0.3)


def test_backends_agree_and_short_side_resize_keeps_aspect(video_dir):
    path = _find(video_dir, "d_h264.mkv")  # 16:9: crop must cut the sides, not squash
    a = decode_clip(path, 0.5, 4, fps=4, size=72, backend="decord").astype(int)
    b = decode_clip(path, 0.5, 4, fps=4, size=72, backend="pyav").astype(int)
    assert a.shape == b.shape == (4, 3, 72, 72)
    assert np.abs(a - b).mean() < 2
    # The marker covers the top-left quarter of 1280x720; after resize to 128x72 and a 72 crop
    # (28 px cut from the left) it spans columns 0..3 of the crop and rows 0..17.
    marker = (a[0, 0] > 240)
    assert marker[:17, :3].all() and not marker[:, 8:].any()


def test_clip_past_the_end_repeats_last_frame_and_none_means_to_the_end(video_dir):
    path = _find(video_dir, "c_mpeg4.avi")  # 5 s
    tail = decode_clip(path, 4.5, 4, fps=4, size=32)
    assert np.abs(tail[2].astype(int) - tail[3].astype(int)).max() < 3
    assert decode_clip(path, 0.0, None, fps=4, size=32).shape[0] == 20
    assert decode_clip(path, 0.0, None, fps=None, size=32).shape[0] == 50


@pytest.mark.parametrize("name,reason", sorted(BAD_VIDEOS.items())[1:])
def test_broken_files_raise_video_error_with_reason(video_dir, name, reason):
    with pytest.raises(VideoError) as caught:
        decode_clip(_find(video_dir, name), 0.0, 4)
    assert caught.value.reason == reason


def test_missing_file_and_bytes_input(video_dir, tmp_path):
    with pytest.raises(VideoError, match="not found"):
        probe(tmp_path / "nope.mp4")
    data = _find(video_dir, "a_h264.mp4").read_bytes()
    from_bytes = decode_clip(data, 1.0, 4, fps=4, size=32)
    from_path = decode_clip(_find(video_dir, "a_h264.mp4"), 1.0, 4, fps=4, size=32)
    np.testing.assert_array_equal(from_bytes, from_path)


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend"):
        decode_clip(b"x", backend="opencv")
