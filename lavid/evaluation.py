"""Held-out evaluation during training: one-step and rollout error with IDM latents, and a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def held_out_states(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context states, target states)`` ``[B, S, N, D]`` of a batch of frames or cached features."""
    if "features" in batch:
        states = F.layer_norm(batch["features"].float(), batch["features"].shape[-1:])
        return states, states
    states = model.encode(batch["frames"])
    targets = model.encode(batch["frames"], target=True) if model.target_encoder is not None else states
    return states, targets


@torch.no_grad()
def evaluate(model, batches: list[dict[str, torch.Tensor]], horizon: int) -> dict[str, float]:
    """Mean L1 errors on held-out clips (lower is better).

    Returns:
        ``eval/one_step`` (teacher-forced, IDM latents), ``eval/copy`` (predict no change: the floor a
        model must beat), ``eval/rollout_h{k}`` (k-th autoregressive step from one context step, with the
        IDM's latents of the true clip), and ``eval/rollout_mean``.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for batch in batches:
        states, targets = held_out_states(model, batch)
        latents, _, _ = model.infer_latents(states)
        one_step = (model.predict(states[:, :-1], latents) - targets[:, 1:]).abs().mean()
        copy = (states[:, :-1] - targets[:, 1:]).abs().mean()
        rolled = model.rollout(states[:, :1], latents[:, :horizon])
        errors = (rolled - targets[:, 1 : 1 + horizon]).abs().mean(dim=(0, 2, 3))
        values = {"eval/one_step": one_step.item(), "eval/copy": copy.item(),
                  "eval/rollout_mean": errors.mean().item()}
        values.update({f"eval/rollout_h{k + 1}": e.item() for k, e in enumerate(errors)})
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
    model.train(was_training)
    return {key: value / len(batches) for key, value in sums.items()}


@torch.no_grad()
def rollout_picture(model, frames: torch.Tensor, horizon: int, path: str | Path, rows: int = 4) -> Path:
    """PNG (and GIF beside it): true frames vs the nearest true frame to each rollout prediction.

    With no pixel decoder yet, a prediction is shown as the held-out frame whose representation is
    nearest (L2) among all steps of the batch: a correct prediction shows the true next frame.

    Args:
        frames: uint8 ``[B, T, 3, H, W]`` held-out clips.
    """
    from PIL import Image, ImageDraw

    was_training = model.training
    model.eval()
    states, targets = held_out_states(model, {"frames": frames})
    latents, _, _ = model.infer_latents(states)
    rolled = model.rollout(states[:, :1], latents[:, :horizon])  # [B, H, N, D]
    model.train(was_training)
    batch, steps = targets.shape[:2]
    bank = targets.reshape(batch * steps, -1)
    nearest = torch.cdist(rolled.reshape(batch * horizon, -1), bank).argmin(-1).reshape(batch, horizon)
    tubelet = frames.shape[1] // steps
    step_frames = frames[:, ::tubelet].permute(0, 1, 3, 4, 2).cpu().numpy()  # [B, S, H, W, 3], first of each step
    rows = min(rows, batch)
    true = step_frames[:rows, : horizon + 1]
    predicted = true.copy()  # column 0 is the context step
    for r in range(rows):
        for h in range(horizon):
            b, s = divmod(int(nearest[r, h]), steps)
            predicted[r, h + 1] = step_frames[b, s]
    pairs = np.concatenate([true, predicted], axis=2)  # [rows, H+1, 2*size, size, 3]: true above predicted
    size, label = frames.shape[-1], 14
    canvas = Image.new("RGB", ((horizon + 1) * size, label + rows * 2 * size), "white")
    ImageDraw.Draw(canvas).text((2, 1), "true / nearest to prediction", fill="black")
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in pairs], axis=0)  # steps side by side
    canvas.paste(Image.fromarray(grid), (0, label))
    gif_frames = [np.concatenate(pairs[:, h], axis=0) for h in range(horizon + 1)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    import imageio.v2 as imageio

    imageio.mimsave(path.with_suffix(".gif"), gif_frames, duration=0.5, loop=0)
    return path
