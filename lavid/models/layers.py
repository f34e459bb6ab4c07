"""Transformer pieces shared by the IDM and the predictor: sin-cos position tables and an MLP."""

from __future__ import annotations

import math

import torch
from torch import nn


def sincos_1d(positions: int, dim: int) -> torch.Tensor:
    """``[positions, dim]`` fixed sinusoidal embedding (dim even)."""
    position = torch.arange(positions, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


def sincos_2d(tokens: int, dim: int) -> torch.Tensor:
    """``[tokens, dim]`` for a square grid of ``tokens`` patches: half the channels per axis."""
    side = int(round(math.sqrt(tokens)))
    if side * side != tokens:
        raise ValueError(f"{tokens} tokens do not form a square grid")
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs dim divisible by 4, got {dim}")
    axis = sincos_1d(side, dim // 2)
    rows = axis[:, None, :].expand(side, side, dim // 2)
    cols = axis[None, :, :].expand(side, side, dim // 2)
    return torch.cat([rows, cols], dim=-1).reshape(tokens, dim)


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out or dim))
