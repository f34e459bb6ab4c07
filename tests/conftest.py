"""Shared fixtures: real video files written with PyAV, and broken ones.

Each written frame is a flat gray level that encodes its presentation time (``level = 200 * t / span``)
with a bright square in the top-left quadrant, so tests can tell which source frame a decoded frame
came from even after lossy compression and resizing.
"""

from __future__ import annotations

import fractions
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


def frame_image(height: int, width: int, level: int) -> np.ndarray:
    image = np.full((height, width, 3), level, dtype=np.uint8)
    image[: height // 4, : width // 4] = 255
    return image


def write_video(
    path: str | os.PathLike,
    times: list[float] | None = None,
    fps: int = 10,
    num_frames: int = 20,
    width: int = 176,
    height: int = 144,
    codec: str = "libx264",
    rotation: int | None = None,
    span: float | None = None,
) -> Path:
    """Write a real video. ``times`` (seconds) makes it variable-frame-rate; else ``num_frames`` at ``fps``.

    Frame ``k`` at time ``t`` has gray level ``round(200 * t / span)`` (``span`` defaults to the last time).
    """
    import av

    path = Path(path)
    if times is None:
        times = [k / fps for k in range(num_frames)]
    span = span or max(times[-1], 1e-6)
    time_base = fractions.Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        if codec == "libx264":
            stream.options = {"crf": "10"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for t in times:
            frame = av.VideoFrame.from_ndarray(frame_image(height, width, round(200 * t / span)), format="rgb24")
            frame.pts = round(t * 1000)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def gray_level(frames: np.ndarray) -> np.ndarray:
    """Mean level of the bottom-right quadrant of ``[T, 3, H, W]`` frames (the time code)."""
    height, width = frames.shape[-2:]
    return frames[..., height // 2 :, width // 2 :].reshape(len(frames), -1).mean(axis=1)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """A folder of good videos in several containers, codecs, rates and sizes, plus broken files."""
    root = tmp_path_factory.mktemp("videos")
    (root / "nested" / "deeper").mkdir(parents=True)
    write_video(root / "a_h264.mp4", fps=30, num_frames=150, width=176, height=144)  # 5 s
    write_video(root / "b_vp9.webm", fps=25, num_frames=100, width=320, height=240, codec="libvpx-vp9")  # 4 s
    write_video(root / "nested" / "c_mpeg4.avi", fps=10, num_frames=50, width=352, height=288, codec="mpeg4")
    write_video(root / "nested" / "d_h264.mkv", fps=24, num_frames=96, width=1280, height=720)  # 4 s, 720p
    write_video(root / "nested" / "deeper" / "e_mpeg4.mov", fps=15, num_frames=60, width=175 + 1, height=99 + 1,
                codec="mpeg4")
    write_video(root / "nested" / "f_short.mp4", fps=10, num_frames=5)  # 0.5 s: too short for a clip
    good = (root / "a_h264.mp4").read_bytes()
    (root / "nested" / "g_truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "nested" / "h_empty.mp4").write_bytes(b"")
    (root / "nested" / "i_text.mp4").write_text("this is not a video\n" * 20)
    (root / "notes.txt").write_text("not listed: wrong extension\n")
    return root


GOOD_VIDEOS = ["a_h264.mp4", "b_vp9.webm", "c_mpeg4.avi", "d_h264.mkv", "e_mpeg4.mov"]
BAD_VIDEOS = {"f_short.mp4": "too short", "g_truncated.mp4": "corrupt", "h_empty.mp4": "empty", "i_text.mp4": "not a video"}


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory) -> Path:
    """A small real DMControl dataset (cartpole, 6 episodes of 16 frames, 32 px, clips of 4 frames)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("sim") / "cartpole"
    subprocess.run([sys.executable, str(root / "data_prep" / "dmc.py"), "--task", "cartpole-swingup", "--episodes",
                    "6", "--episode-len", "16", "--clip-len", "4", "--size", "32", "--workers", "0", "--out", str(out),
                    "--no-progress"], check=True, capture_output=True, timeout=300)
    return out
