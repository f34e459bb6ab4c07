"""Pixel decoder d(s) -> frames, trained after the fact on a frozen world model's representations.

It exists to look at predictions: every picture and pixel metric of the evals goes through it. The
world model is never trained through it. Each step's ``N`` tokens are decoded on their own (a
frame-causal mask restricted to one step: a step's pixels depend on that step's representation only),
by a small ViT whose linear head maps each token to the pixels of its patch for every frame of the
step's tubelet. The loss is L1 on pixels in [0, 1]; the fitting loop is :mod:`lavid.training.fit_decoder`.

A saved decoder records the fingerprint of the encoder whose representations it decodes; loading it
for another encoder is refused.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from lavid.core.config import check
from lavid.models.layers import sincos_2d


class DecoderError(Exception):
    """A saved decoder is missing, unreadable, or belongs to another encoder."""


@dataclass
class DecoderConfig:
    """Attributes:
        dim, depth, num_heads: the decoder ViT.
        steps, batch_size, lr: its training (batches are clips; every step of a clip is a sample).
    """

    dim: int = 192
    depth: int = 3
    num_heads: int = 4
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.dim % self.num_heads == 0 and self.dim % 4 == 0, f"{key}dim",
              f"{self.dim} must be divisible by num_heads and by 4")
        check(self.depth >= 1, f"{key}depth", "must be >= 1")
        check(self.steps >= 1, f"{key}steps", "must be >= 1")
        check(self.batch_size >= 1, f"{key}batch_size", "must be >= 1")
        check(self.lr > 0, f"{key}lr", "must be > 0")


class PixelDecoder(nn.Module):
    """Step tokens ``[B, S, N, D_enc]`` -> frames ``[B, S*k, 3, H, W]`` in [0, 1] (float).

    Args:
        in_dim, num_tokens: the encoder's token dim and tokens per step (a square grid of patches, or 1: one
            vector a step, copied to every patch position of the grid).
        img_size, patch_size, tubelet: the encoder's geometry, which the decoder inverts.
    """

    def __init__(self, config: DecoderConfig, in_dim: int, num_tokens: int, img_size: int, patch_size: int,
                 tubelet: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.config = config
        self.geometry = {"in_dim": in_dim, "num_tokens": num_tokens, "img_size": img_size, "patch_size": patch_size,
                         "tubelet": tubelet}
        self.patch, self.tubelet, self.side = patch_size, tubelet, img_size // patch_size
        grid = self.side * self.side
        if num_tokens not in (1, grid):
            raise ValueError(f"decoder needs one token per {patch_size}² patch ({grid}) or one vector per step, "
                             f"got {num_tokens} tokens")
        self.broadcast = num_tokens == 1 and grid > 1  # one vector a step (conv encoder): spread over the grid
        self.project = nn.Linear(in_dim, config.dim)
        self.register_buffer("position", sincos_2d(grid, config.dim), persistent=False)
        self.blocks = nn.ModuleList(Block(config.dim, config.num_heads, qkv_bias=True) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, tubelet * 3 * patch_size * patch_size)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        batch, steps = states.shape[:2]
        x = self.project(rearrange(states.float(), "b s n d -> (b s) n d"))
        if self.broadcast:
            x = x.expand(-1, self.position.shape[0], -1)
        x = x + self.position
        for block in self.blocks:
            x = block(x)
        patches = self.head(self.norm(x))  # [(B S), N, k*3*p*p]
        frames = rearrange(patches, "(b s) (gh gw) (k c ph pw) -> b (s k) c (gh ph) (gw pw)", b=batch, s=steps,
                           gh=self.side, k=self.tubelet, c=3, ph=self.patch, pw=self.patch)
        return frames + 0.5  # centred start: an untrained decoder paints mid-grey

    def decode_uint8(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, S, N, D]`` -> uint8 frames ``[B, S*k, 3, H, W]``."""
        return (self(states).clamp(0, 1) * 255).round().to(torch.uint8)


def make_decoder(model, config: DecoderConfig | None = None) -> PixelDecoder:
    """A decoder sized for ``model``'s encoder."""
    enc = model.config.encoder
    return PixelDecoder(config or DecoderConfig(), model.encoder.dim, model.encoder.num_tokens, enc.img_size,
                        enc.patch_size, enc.tubelet)


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float in [0, 1]."""
    return frames.float() / 255.0


def save_decoder(decoder: PixelDecoder, path: str | os.PathLike, encoder: str, extra: dict | None = None) -> Path:
    """Write the decoder with its config, geometry and the encoder fingerprint (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state": decoder.state_dict(), "config": asdict(decoder.config), "geometry": decoder.geometry,
                "encoder": encoder, **(extra or {})}, tmp)
    os.replace(tmp, path)
    return path


def load_decoder(path: str | os.PathLike, encoder: str, device: str | torch.device = "cpu") -> PixelDecoder:
    """Load a decoder saved by :func:`save_decoder` for the encoder with fingerprint ``encoder``."""
    path = Path(path)
    if not path.exists():
        raise DecoderError(f"no pixel decoder at {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        decoder = PixelDecoder(DecoderConfig(**saved["config"]), **saved["geometry"])
        decoder.load_state_dict(saved["state"])
    except Exception as error:
        raise DecoderError(f"{path} is not a readable pixel decoder ({type(error).__name__}: {error})") from error
    if saved.get("encoder") != encoder:
        raise DecoderError(f"{path} decodes the features of encoder {saved.get('encoder')}, not {encoder}; "
                           "delete it or point to the right one")
    return decoder.to(device).eval()
