"""Random-shift augmentation of training clips (DrQ): pad each clip by its border pixels, crop back at a
random offset. One offset per clip, shared by all its frames, so the motion between frames is kept and
only where the scene sits in the picture changes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, T, C, H, W]`` frames (any dtype) -> the same shape, each clip shifted by up to ``pad`` pixels.

    The border is replicated (as DrQ does); offsets are drawn from ``generator`` (on its device).
    """
    if pad <= 0:
        return frames
    batch, time, channels, height, width = frames.shape
    padded = F.pad(frames.flatten(1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator, device=device).tolist()
    crops = [padded[b, :, dy:dy + height, dx:dx + width] for b, (dy, dx) in enumerate(offsets)]
    return torch.stack(crops).view(batch, time, channels, height, width).to(frames.dtype)
