"""Masked-autoencoder pretraining of the frame encoder: a way to a meaningful encoder with no downloads.

The encoder sees a random 25 % of each frame's patches; a small decoder reconstructs the pixels of the
hidden ones (per-patch normalized, MSE on hidden patches only). The pretraining loop
(:mod:`lavid.training.pretrain_mae`) saves the encoder as a timm state dict, which
``model.encoder.checkpoint`` loads like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from lavid.core.config import check
from lavid.models.encoder import FrameEncoder, normalize_frames
from lavid.models.layers import sincos_2d


@dataclass
class MAEConfig:
    """Attributes:
        mask_ratio: share of patches hidden from the encoder.
        decoder_dim, decoder_depth, decoder_heads: the throwaway decoder.
        steps, lr, batch_size, weight_decay: optimization (frames per batch = batch_size × clip frames).
    """

    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    steps: int = 300
    lr: float = 1.5e-3
    batch_size: int = 8
    weight_decay: float = 0.05

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(0.0 < self.mask_ratio < 1.0, f"{key}mask_ratio", "must be in (0, 1)")
        check(self.decoder_dim % 4 == 0 and self.decoder_dim % self.decoder_heads == 0, f"{key}decoder_dim",
              "must be divisible by 4 and by decoder_heads")
        check(self.steps >= 1 and self.batch_size >= 1 and self.lr > 0, f"{key}steps", "steps, batch_size, lr > 0")


class MaskedAutoencoder(nn.Module):
    """Wraps a :class:`FrameEncoder`; ``forward(frames uint8 [B, T, 3, H, W], generator) -> loss``."""

    def __init__(self, encoder: FrameEncoder, config: MAEConfig) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.encoder, self.config = encoder, config
        vit = encoder.vit
        if vit.num_prefix_tokens:
            raise ValueError("MAE pretraining expects an encoder without class or register tokens")
        tokens, patch, k = encoder.num_tokens, encoder.config.patch_size, encoder.config.tubelet
        self.embed = nn.Linear(encoder.dim, config.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("position", sincos_2d(tokens, config.decoder_dim), persistent=False)
        self.blocks = nn.ModuleList(Block(config.decoder_dim, config.decoder_heads, qkv_bias=True)
                                    for _ in range(config.decoder_depth))
        self.norm = nn.LayerNorm(config.decoder_dim)
        self.head = nn.Linear(config.decoder_dim, patch * patch * 3 * k)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``[M, 3k, H, W]`` -> ``[M, N, p*p*3k]``."""
        p = self.encoder.config.patch_size
        return rearrange(images, "m c (h p) (w q) -> m (h w) (p q c)", p=p, q=p)

    def forward(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        k = self.encoder.config.tubelet
        images = rearrange(normalize_frames(frames), "b (s k) c h w -> (b s) (c k) h w", k=k)
        vit = self.encoder.vit
        x = vit._pos_embed(vit.patch_embed(images))  # [M, N, D]
        count, tokens = x.shape[:2]
        keep = max(1, int(round(tokens * (1 - self.config.mask_ratio))))
        noise = torch.rand(count, tokens, generator=generator, device=x.device)
        order = noise.argsort(dim=1)
        visible = order[:, :keep]
        x = torch.gather(x, 1, visible[..., None].expand(-1, -1, x.shape[-1]))
        x = vit.norm(vit.blocks(vit.norm_pre(x)))
        decoded = self.mask_token.expand(count, tokens, -1).clone()
        decoded.scatter_(1, visible[..., None].expand(-1, -1, decoded.shape[-1]), self.embed(x))
        decoded = decoded + self.position
        for block in self.blocks:
            decoded = block(decoded)
        predicted = self.head(self.norm(decoded))
        target = self.patchify(images)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        hidden = torch.ones(count, tokens, device=x.device)
        hidden.scatter_(1, visible, 0.0)
        per_patch = (predicted - target).pow(2).mean(-1)
        return (per_patch * hidden).sum() / hidden.sum()
