"""The transfer picture: video A, video B, B driven by A's latent actions, and the cycle back to A.

Rows (left to right: steps 0..H, the first frame of each step; predictions decoded by the pixel decoder):

    A                 the true frames of A
    B                 the true frames of B
    B driven by A     B's first step, then B rolled out with the latents the IDM infers from A
    A, own latents    A's first step, then A rolled out with its own latents (the model's best case)
    A, cycle A->B->A  A rolled out with the latents re-inferred from "B driven by A"

Written as a PNG strip, a GIF and an MP4 (the rows side by side, one step per frame).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from lavid.data.video import VideoError, decode_clip, probe
from lavid.metrics.transfer import cycle_transfer

log = logging.getLogger(__name__)

ROWS = ("A", "B", "B driven by A", "A, own latents", "A, cycle A->B->A")


def load_input(spec: str, frames: int, size: int, fps: float | None, start: float = 0.0,
               frame_stride: int = 1) -> np.ndarray:
    """``frames`` frames ``[T, 3, size, size]`` uint8 from a video file or a dataset clip ``DATASET_DIR#INDEX``.

    With ``frame_stride`` r (the run's ``data.frame_stride``) every r-th frame is kept, of ``frames · r``
    decoded (at ``fps`` for a video file) or stored.

    Raises:
        VideoError: unreadable, or too short for ``frames`` frames at ``fps`` from ``start``.
        ValueError: a dataset reference that does not exist.
    """
    path, sep, index = spec.rpartition("#")
    if sep and Path(path).is_dir():
        from lavid.data.clips import ClipDataset

        dataset = ClipDataset(path, columns=[], max_frames=frames, frame_stride=frame_stride)
        if not index.isdigit() or int(index) >= len(dataset):
            raise ValueError(f"{spec}: {path} has clips 0..{len(dataset) - 1}")
        item = dataset[int(index)]["frames"].numpy()
        if item.shape[-1] != size:
            raise ValueError(f"{spec}: clips of {path} are {item.shape[-1]} px, the model takes {size} px")
        return item
    if not Path(spec).is_file():
        raise ValueError(f"{spec} is neither a video file nor DATASET_DIR#CLIP_INDEX")
    info = probe(spec)
    available = info.num_resampled(fps) - (int(start * fps) if fps else int(start))
    needed = frames * frame_stride
    if available < needed:
        rate = f" at {fps:g} fps" if fps else ""
        stride = f" ({frames} frames at frame stride {frame_stride})" if frame_stride > 1 else ""
        raise VideoError("too short", f"{spec} gives {max(0, available)} frames{rate} from {start:g} s; "
                                      f"the model needs {needed}{stride} (lower --fps or --start)")
    return np.ascontiguousarray(decode_clip(spec, start, needed, fps, size, info=info)[::frame_stride])


@torch.no_grad()
def transfer_rows(model, decoder, frames_a: torch.Tensor, frames_b: torch.Tensor, horizon: int):
    """uint8 clips ``[T, 3, H, W]`` -> ``(rows {name: [H+1, H, W, 3] uint8}, metrics)``."""
    device = next(model.parameters()).device
    batch = torch.stack([frames_a, frames_b]).to(device)
    states = model.encode(batch)
    targets = model.encode(batch, target=True) if model.target_encoder is not None else states
    result = cycle_transfer(model, states[:1], targets[:1], states[1:], horizon)
    tubelet = frames_a.shape[0] // states.shape[1]

    def true_steps(frames):
        return frames[::tubelet][: horizon + 1].permute(0, 2, 3, 1).cpu().numpy()

    def decoded(first, predicted):
        pictures = decoder.decode_uint8(predicted)[0, ::tubelet].permute(0, 2, 3, 1).cpu().numpy()
        return np.concatenate([first[:1], pictures], axis=0)

    a, b = true_steps(frames_a), true_steps(frames_b)
    rows = {"A": a, "B": b, "B driven by A": decoded(b, result["b_driven"]),
            "A, own latents": decoded(a, result["a_own"]), "A, cycle A->B->A": decoded(a, result["a_cycle"])}
    metrics = {"error_own": result["own"].item(), "error_cycle": result["cycle"].item(),
               "ratio": (result["cycle"] / result["own"]).item()}
    return rows, metrics


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def write_transfer(rows: dict[str, np.ndarray], out: str | os.PathLike, scale: int = 2, fps: float = 2.0,
                   title: str = "") -> dict[str, Path]:
    """PNG strip (rows × steps, labelled), GIF and MP4 (rows side by side, one frame per step)."""
    from PIL import Image, ImageDraw

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(rows)
    steps, height, width = rows[names[0]].shape[:3]
    cell_h, cell_w, label_w, top = height * scale, width * scale, 120, 18
    canvas = Image.new("RGB", (label_w + steps * cell_w, top + len(names) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), title or "latent-action transfer (columns: steps)", fill="black")
    for r, name in enumerate(names):
        draw.text((2, top + r * cell_h + cell_h // 2 - 6), name, fill="black")
        for s in range(steps):
            canvas.paste(Image.fromarray(_upscale(rows[name][s], scale)), (label_w + s * cell_w, top + r * cell_h))
    paths = {"png": out / "transfer.png", "gif": out / "transfer.gif", "mp4": out / "transfer.mp4"}
    canvas.save(paths["png"])

    frames = []
    for s in range(steps):
        panel = Image.new("RGB", (len(names) * cell_w, cell_h + 14), "white")
        panel_draw = ImageDraw.Draw(panel)
        for r, name in enumerate(names):
            panel.paste(Image.fromarray(_upscale(rows[name][s], scale)), (r * cell_w, 14))
            panel_draw.text((r * cell_w + 2, 1), name[:18], fill="black")
        frames.append(np.asarray(panel))
    import imageio.v2 as imageio

    imageio.mimsave(paths["gif"], frames, duration=1.0 / fps, loop=0)
    _write_mp4(frames, paths["mp4"], fps)
    return paths


def _write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> None:
    import av
    from fractions import Fraction

    height, width = frames[0].shape[:2]
    height, width = height - height % 2, width - width % 2  # yuv420p needs even sides
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:height, :width]), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
