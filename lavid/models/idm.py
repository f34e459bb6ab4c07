"""Inverse dynamics model g(s_t, s_t+1) -> raw latent action, one per transition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, repeat
from torch import nn

from lavid.core.config import check
from lavid.models.layers import sincos_2d


@dataclass
class IDMConfig:
    """A small transformer over the tokens of both steps plus one query token.

    Attributes:
        dim, depth, num_heads, mlp_ratio: transformer size.
        input: what the two token sets are: ``pair`` — ``s_t`` and ``s_t+1``; ``change`` — ``s_t`` and the
            layer-normed change ``LN(s_t+1 − s_t)``, so a change that is a few percent of the features is
            as loud as the features themselves (a diagnostic run found the IDM of ``pair`` collapsing to
            a near-constant z when frozen ViT features hardly changed; issue 11); ``history`` — as
            ``change`` plus the previous change ``LN(s_t − s_t−1)`` (zero for a clip's first
            transition), so the IDM can tell what the action changed from the motion history
            already predicts (torque-driven bodies: the action shows in the change of the change).
    """

    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    input: Literal["pair", "change", "history"] = "pair"

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.dim % self.num_heads == 0, f"{key}dim", f"{self.dim} not divisible by num_heads {self.num_heads}")
        check(self.dim % 4 == 0, f"{key}dim", "must be divisible by 4 (2D position embedding)")
        check(self.depth >= 1, f"{key}depth", "must be >= 1")
        check(self.input in ("pair", "change", "history"), f"{key}input",
              f"must be pair, change or history, got {self.input!r}")


class InverseDynamics(nn.Module):
    """``(s_t, s_t+1)`` tokens ``[B, S, N, D_enc]`` each -> raw latents ``[B, S, raw_dim]``."""

    def __init__(self, config: IDMConfig, in_dim: int, num_tokens: int, raw_dim: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.input = config.input
        self.project = nn.Linear(in_dim, config.dim)
        self.register_buffer("position", sincos_2d(num_tokens, config.dim), persistent=False)
        self.which_step = nn.Parameter(torch.zeros(3 if config.input == "history" else 2, config.dim))
        self.query = nn.Parameter(torch.zeros(1, 1, config.dim))
        nn.init.trunc_normal_(self.which_step, std=0.02)
        nn.init.trunc_normal_(self.query, std=0.02)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.num_heads, mlp_ratio=config.mlp_ratio, qkv_bias=True) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, raw_dim)

    def forward(self, current: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
        """``current``/``following`` ``[B, S, N, D_enc]``: consecutive transitions of one clip (``history``
        reads transition k's previous change from ``current[k] − current[k−1]``)."""
        batch = current.shape[0]
        parts = [current, following]
        if self.input in ("change", "history"):
            parts[1] = nn.functional.layer_norm(following - current, following.shape[-1:])
        if self.input == "history":
            previous = torch.cat([torch.zeros_like(current[:, :1]), current[:, 1:] - current[:, :-1]], dim=1)
            parts.append(nn.functional.layer_norm(previous, previous.shape[-1:]))
        sets = torch.stack(parts, dim=2)  # [B, S, 2 or 3, N, D]
        tokens = self.project(sets) + self.position + self.which_step[:, None, :]
        tokens = rearrange(tokens, "b s k n d -> (b s) (k n) d")
        x = torch.cat([repeat(self.query, "1 1 d -> m 1 d", m=tokens.shape[0]), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        raw = self.head(self.norm(x[:, 0]))
        return rearrange(raw, "(b s) r -> b s r", b=batch)
