"""data_prep/videos.py: clip index, skip report, materialized clips, resumability, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from conftest import BAD_VIDEOS, GOOD_VIDEOS
from lavid.data.clips import ClipDataset
from lavid.data.store import episode_features
from lavid.data.video import decode_clip
from lavid.data.video_index import VideoIndexConfig, build_video_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "data_prep" / "videos.py"


def run_script(*args, check=True):
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--no-progress"], capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result


def table(out, name):
    return datasets.load_from_disk(str(Path(out) / name)).to_pandas()


def test_script_indexes_good_videos_and_reports_bad_ones(video_dir, tmp_path):
    out = tmp_path / "index"
    result = run_script(video_dir, out, "--clip-len", "4", "--workers", "2")
    summary = [line for line in result.stdout.splitlines() if line.startswith("videos:")][0]
    assert "videos: 9, indexed: 5" in summary and "skipped: 4" in summary
    assert "corrupt: 1, empty: 1, not a video: 1, too short: 1" in summary
    skipped = {Path(r["source"]).name: r["reason"] for r in map(json.loads, open(out / "skipped.jsonl"))}
    assert skipped == BAD_VIDEOS
    episodes = table(out, "episodes")
    assert sorted(Path(s).name for s in episodes.source) == sorted(GOOD_VIDEOS)
    # the one episodes schema of lavid.data.store
    assert datasets.load_from_disk(str(out / "episodes")).features == episode_features("video")
    assert sorted(episodes.columns) == sorted(["source", "episode", "first_row", "num_steps", "num_frames", "duration",
                                               "src_fps", "src_frames", "width", "height", "rotation", "codec"])
    clips = table(out, "clips")
    # 4 fps: a 5 s video gives 20 frames -> 5 clips of 4; 4 s videos give 4; c (5 s) 5.
    per_video = clips.groupby(clips.source.map(lambda s: Path(s).name)).size().to_dict()
    assert per_video == {"a_h264.mp4": 5, "b_vp9.webm": 4, "c_mpeg4.avi": 5, "d_h264.mkv": 4, "e_mpeg4.mov": 4}
    assert np.allclose(clips.start, clips.start_frame / 4)
    meta = json.loads((out / "lavid.json").read_text())
    assert meta["complete"] and meta["counts"]["clips"] == 22 and not meta["materialized"]


def test_rerun_on_finished_output_does_nothing(video_dir, tmp_path):
    out = tmp_path / "index"
    run_script(video_dir, out, "--clip-len", "4", "--workers", "0")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    result = run_script(video_dir, out, "--clip-len", "4", "--workers", "0")
    assert "already complete" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    other = run_script(video_dir, out, "--clip-len", "8", check=False)
    assert other.returncode == 2 and "clip_len" in other.stderr and "Traceback" not in other.stderr


def test_killed_run_resumes_to_the_same_result(video_dir, tmp_path):
    reference = tmp_path / "reference"
    build_video_dataset(video_dir, reference, VideoIndexConfig(clip_len=4, materialize=True), progress=False)

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(video_dir), str(out), "--clip-len", "4",
                                "--materialize", "--workers", "0", "--chunk-items", "1", "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / ".work").glob("chunk-*[0-9]"))) < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    committed = len(list((out / ".work").glob("chunk-*[0-9]")))
    assert 3 <= committed < 9, "the kill should land halfway"
    assert not (out / "lavid.json").exists()

    run_script(video_dir, out, "--clip-len", "4", "--materialize", "--workers", "2", "--chunk-items", "1")
    for name in ("clips", "episodes"):
        assert table(out, name).equals(table(reference, name))
    a, b = ClipDataset(out), ClipDataset(reference)
    assert len(a) == len(b) == 22
    for index in range(len(a)):
        assert np.array_equal(a[index]["frames"], b[index]["frames"])
    assert (out / "skipped.jsonl").read_text() == (reference / "skipped.jsonl").read_text()
    assert not (out / ".work").exists()


def test_materialized_clips_equal_on_the_fly_decoding(video_dir, tmp_path):
    config = VideoIndexConfig(clip_len=4, size=32, stride=3)
    build_video_dataset(video_dir, tmp_path / "index", config, progress=False)
    build_video_dataset(video_dir, tmp_path / "mat", VideoIndexConfig(clip_len=4, size=32, stride=3, materialize=True),
                        progress=False)
    index, materialized = ClipDataset(tmp_path / "index"), ClipDataset(tmp_path / "mat")
    assert not index.materialized and materialized.materialized
    assert len(index) == len(materialized) > 0
    for i in range(len(index)):
        a, b = index[i]["frames"], materialized[i]["frames"]
        assert a.shape == (4, 3, 32, 32)
        assert np.array_equal(a.numpy(), b.numpy())
    clip = index.clips[3]
    direct = decode_clip(str(clip["source"]), float(clip["start"]), 4, 4.0, 32)
    assert np.array_equal(index[3]["frames"].numpy(), direct)


def test_bad_arguments_fail_before_work(video_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_script(tmp_path / "empty", tmp_path / "out", check=False)
    assert result.returncode == 2 and "no videos found" in result.stderr and not (tmp_path / "out").exists()
    result = run_script(video_dir, tmp_path / "out", "--clip-len", "0", check=False)
    assert result.returncode == 2 and "clip_len" in result.stderr
    if os.geteuid() != 0:  # root can write anywhere: use a path under a file instead
        pytest.skip("needs a non-root user")


def test_unwritable_output_is_a_clear_error(video_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run_script(video_dir, blocker / "out", check=False)
    assert result.returncode == 2 and "not writable" in result.stderr and "Traceback" not in result.stderr
