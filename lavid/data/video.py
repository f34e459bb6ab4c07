"""Video decoding: probe a video, resample it to a target frame rate by timestamps, resize and crop.

Decord is the fast path; PyAV is the fallback whenever decord cannot open or decode a file. Decord
applies the display rotation itself; on the PyAV path we rotate by the frame's display matrix. Both backends index frames in presentation
order and report presentation timestamps relative to the first frame, so a clip is fully described by
``(source, start_time, fps, num_frames)`` whichever backend decodes it.

Resampling picks, for each target time ``start + i / fps``, the last source frame whose presentation
time is at or before it. This handles variable frame rate: it follows timestamps, not frame counts.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np

VideoSource = Union[str, os.PathLike, bytes]
"""A path to a video file or its raw bytes (e.g. from a ``datasets`` bytes column)."""

_TIME_EPS = 1e-6


class VideoError(Exception):
    """A video cannot be used. ``reason`` is a short category for the skip report."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video found.

    Attributes:
        timestamps: ``[N]`` float64 presentation times in seconds, sorted, the first one 0.
        duration: end of the last frame in seconds (last timestamp + one frame period).
        width, height: stored frame size in pixels (before rotation).
        rotation: clockwise display rotation in degrees (0, 90, 180, 270).
        codec: name of the video codec.
    """

    timestamps: np.ndarray
    duration: float
    width: int
    height: int
    rotation: int
    codec: str

    @property
    def num_frames(self) -> int:
        return int(len(self.timestamps))

    @property
    def avg_fps(self) -> float:
        return self.num_frames / self.duration if self.duration > 0 else 0.0

    def num_resampled(self, fps: float | None) -> int:
        """How many frames the video yields at ``fps`` (``None``: its own frames)."""
        if not fps:
            return self.num_frames
        return max(0, math.ceil(self.duration * fps - _TIME_EPS))


def _open_input(source: VideoSource) -> str | BinaryIO:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoError("empty", "zero bytes")
        return io.BytesIO(bytes(source))
    path = os.fspath(source)
    if not os.path.exists(path):
        raise VideoError("not found", path)
    if not os.access(path, os.R_OK):
        raise VideoError("unreadable", f"permission denied: {path}")
    if os.path.isdir(path):
        raise VideoError("not a video", f"is a directory: {path}")
    if os.path.getsize(path) == 0:
        raise VideoError("empty", "zero-byte file")
    return path


_CONTAINER_MAGIC = (
    (4, b"ftyp"),  # mp4, mov, 3gp
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"),  # matroska, webm
    (0, b"RIFF"),  # avi
    (0, b"OggS"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # mpeg-ps
    (0, b"\x47"),  # mpeg-ts sync byte
)


def _looks_like_video(source: VideoSource) -> bool:
    """Whether the first bytes carry a known container signature (damaged video, not another file)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:16])
    else:
        with open(source, "rb") as handle:
            head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_MAGIC)


def _frame_rotation(frame) -> int:
    """Clockwise display rotation of a decoded PyAV frame, rounded to a multiple of 90 degrees."""
    rotation = getattr(frame, "rotation", 0) or 0
    # PyAV reports the display matrix angle counter-clockwise; the picture must be turned back.
    return int(round(-float(rotation) / 90.0)) % 4 * 90


def probe(source: VideoSource) -> VideoInfo:
    """Read a video's frame timestamps and geometry without decoding it all.

    Demuxes every packet (cheap) to collect presentation timestamps, then decodes the first frame to
    prove the stream is decodable and to read its rotation.

    Raises:
        VideoError: the file is missing, empty, not a video, or has no decodable frame.
    """
    import av

    with _open_container(source) as container:
        stream = container.streams.video[0]
        first = _first_frame(container, stream)
        width, height = first.width, first.height
        rotation = _frame_rotation(first)
        codec = stream.codec_context.name or "unknown"
    with _open_container(source) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        if time_base is None:
            raise VideoError("corrupt", "video stream has no time base")
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_corrupt:
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None:
                    pts.append(stamp)
        except av.error.FFmpegError:
            pass  # truncated tail: keep the packets read so far
        if not pts:
            raise VideoError("corrupt", "no readable video packets")
        rate = stream.average_rate or stream.guessed_rate

    stamps = np.unique(np.asarray(pts, dtype=np.int64))  # sort presentation order, drop duplicates
    seconds = (stamps - stamps[0]).astype(np.float64) * float(time_base)
    if len(seconds) > 1:
        period = float(np.median(np.diff(seconds)))
    else:
        period = 1.0 / float(rate) if rate else 1.0 / 30.0
    duration = float(seconds[-1] + period)
    return VideoInfo(seconds, duration, width, height, rotation, codec)


def _open_container(source: VideoSource):
    """Open ``source`` with PyAV; a file that is not a video raises ``VideoError``."""
    import av

    try:
        container = av.open(_open_input(source), metadata_errors="ignore")
    except av.error.FFmpegError as error:  # text files, truncated mp4 (no moov atom), ...
        reason = "corrupt" if _looks_like_video(source) else "not a video"
        raise VideoError(reason, str(error)) from None
    if not container.streams.video:
        container.close()
        raise VideoError("not a video", "no video stream")
    return container


def _first_frame(container, stream):
    import av

    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as error:
        raise VideoError("corrupt", f"cannot decode: {error}") from None
    raise VideoError("corrupt", "no decodable frame")


def resample_indices(timestamps: np.ndarray, fps: float | None, start: float, count: int) -> np.ndarray:
    """Source frame indices for ``count`` frames at ``fps`` from ``start`` seconds.

    Args:
        timestamps: ``[N]`` sorted presentation times (s) of the source frames, first one 0.
        fps: target frame rate; ``None`` or 0 keeps the source frames (``start`` is then an index).
        start: time (s) of the first target frame.
        count: number of target frames.

    Returns:
        ``[count]`` int64 indices into the source frames (repeats where ``fps`` exceeds the source's).
    """
    if not fps:
        first = int(round(start))
        return np.arange(first, first + count, dtype=np.int64).clip(0, len(timestamps) - 1)
    targets = start + np.arange(count, dtype=np.float64) / fps
    indices = np.searchsorted(timestamps, targets + _TIME_EPS, side="right") - 1
    return indices.clip(0, len(timestamps) - 1).astype(np.int64)


def _resize_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """Stored-orientation size whose short side is ``size``, keeping the aspect ratio."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def _finish(frames: np.ndarray, rotation: int, size: int | None) -> np.ndarray:
    """``[T, H, W, 3]`` stored-orientation frames -> rotated, center-cropped ``[T, 3, size, size]``."""
    if rotation:
        frames = np.rot90(frames, k=-(rotation // 90), axes=(1, 2))
    if size:
        height, width = frames.shape[1:3]
        top, left = (height - size) // 2, (width - size) // 2
        frames = frames[:, top : top + size, left : left + size]
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))


def _decode_decord(source: VideoSource, indices: np.ndarray, info: VideoInfo, size: int | None) -> np.ndarray:
    import decord

    # decord applies the display rotation itself, but its own resize breaks on 90/270-degree videos
    # (buffer size mismatch): those are decoded at full size and resized here.
    quarter_turn = info.rotation in (90, 270)
    kwargs = {}
    if size and not quarter_turn:
        kwargs["width"], kwargs["height"] = _resize_dims(info.width, info.height, size)
    handle = _open_input(source)
    reader = decord.VideoReader(handle, ctx=decord.cpu(0), num_threads=1, **kwargs)
    if len(reader) < int(indices.max()) + 1:
        raise VideoError("corrupt", f"decord sees {len(reader)} frames, probe saw {info.num_frames}")
    unique, inverse = np.unique(indices, return_inverse=True)
    frames = reader.get_batch(unique.tolist()).asnumpy()
    if size and quarter_turn:
        frames = _resize_short_side(frames, size)
    return frames[inverse]


def _resize_short_side(frames: np.ndarray, size: int) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 -> ``[T, H', W', 3]`` with short side ``size`` (antialiased bilinear)."""
    import torch
    import torch.nn.functional as F

    width, height = _resize_dims(frames.shape[2], frames.shape[1], size)
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return tensor.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _decode_pyav(source: VideoSource, indices: np.ndarray, info: VideoInfo, size: int | None) -> np.ndarray:
    import av

    wanted = set(np.unique(indices).tolist())
    last = max(wanted)
    dims = _resize_dims(info.width, info.height, size) if size else (info.width, info.height)
    found: dict[int, np.ndarray] = {}
    with _open_container(source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first_pts = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            if first_pts is None:
                first_pts = frame.pts
            seconds = float((frame.pts - first_pts) * stream.time_base)
            index = int(np.searchsorted(info.timestamps, seconds + _TIME_EPS, side="right") - 1)
            if index in wanted and index not in found:
                image = frame.reformat(width=dims[0], height=dims[1], format="rgb24")
                found[index] = image.to_ndarray()
            if index >= last and len(found) == len(wanted):
                break
    missing = wanted - found.keys()
    if missing:
        raise VideoError("corrupt", f"{len(missing)} frames could not be decoded")
    return np.stack([found[i] for i in indices.tolist()])


def decode_clip(
    source: VideoSource,
    start: float = 0.0,
    num_frames: int | None = None,
    fps: float | None = 4.0,
    size: int | None = 64,
    info: VideoInfo | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Decode ``num_frames`` frames at ``fps`` starting at ``start`` seconds.

    Frames are resized so the short side is ``size`` and center-cropped to ``size × size`` (``None``
    keeps the full frame); rotation metadata is applied. A clip asking for frames past the end of the
    video repeats the last frame (callers that need full clips check ``info.num_resampled(fps)``).

    Args:
        source: path or bytes of the video.
        start: time of the first frame in seconds from the first frame (a frame index when ``fps`` is
            ``None``).
        num_frames: number of output frames; ``None`` decodes to the end of the video.
        fps: target frame rate (default 4); ``None`` keeps the source frames.
        size: output side in pixels, or ``None``.
        info: a previous ``probe(source)``; probed here when missing.
        backend: ``"auto"`` (decord, falling back to PyAV), ``"decord"`` or ``"pyav"``.

    Returns:
        ``[T, 3, H, W]`` uint8 frames.

    Raises:
        VideoError: the video cannot be read or decoded by any backend.
    """
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"backend must be 'auto', 'decord' or 'pyav', got {backend!r}")
    info = info or probe(source)
    if num_frames is None:
        total = info.num_resampled(fps)
        start_count = int(round(start)) if not fps else math.floor(start * fps + _TIME_EPS)
        num_frames = max(0, total - start_count)
    if num_frames <= 0:
        raise VideoError("too short", f"no frames at or after start={start}")
    indices = resample_indices(info.timestamps, fps, start, num_frames)
    errors = []
    if backend in ("auto", "decord"):
        try:  # decord's frames come out already rotated
            return _finish(_decode_decord(source, indices, info, size), 0, size)
        except VideoError as error:
            errors.append(f"decord: {error}")
            if backend == "decord":
                raise
        except Exception as error:  # decord raises bare RuntimeErrors/DECORDErrors
            errors.append(f"decord: {type(error).__name__}: {str(error)[:200]}")
            if backend == "decord":
                raise VideoError("corrupt", errors[-1]) from None
    try:
        frames = _decode_pyav(source, indices, info, size)
    except VideoError as error:
        raise VideoError(error.reason, "; ".join(errors + [f"pyav: {error.detail}"])) from None
    except Exception as error:
        raise VideoError("corrupt", "; ".join(errors + [f"pyav: {type(error).__name__}: {error}"])) from None
    if errors and backend == "auto":
        warnings.warn(f"decord failed, decoded with PyAV instead ({errors[0]})", stacklevel=2)
    return _finish(frames, info.rotation, size)
