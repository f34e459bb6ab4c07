"""The ``fsq`` family: finite scalar quantization (Mentzer et al. 2024).

The swept coefficient is the list of levels L (codebook = their product); the default sweep is 8x5 (40 codes),
8x5x5x5 (1000), 8x8x8x5x5 (12800) and 8x8x8x6x5x5 (76800).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lavid.core.config import check
from lavid.models.latents.base import LatentFamily
from lavid.models.latents.registry import FamilyConfig, FamilySpec, parse_levels, register


@dataclass
class FSQConfig(FamilyConfig):
    """Attributes:
        fsq_levels: quantization levels per code dimension (swept; codebook = their product).
    """

    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(len(self.fsq_levels) >= 1 and all(level >= 2 for level in self.fsq_levels), f"{key}fsq_levels",
              f"needs levels >= 2, got {self.fsq_levels}")


class FSQ(LatentFamily):
    """Finite scalar quantization: a few bounded dimensions rounded to fixed levels, then projected to z.

    No codebook to collapse: every one of prod(levels) codes is reachable by construction. The IDM outputs
    ``[..., len(levels)]``; a linear layer projects the normalized codes to z ``[..., dim]``.

    Args:
        config: ``dim`` and ``fsq_levels`` (the flat ``model.latent`` config is one).
    """

    def __init__(self, config: FSQConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.raw_dim = len(config.fsq_levels)
        self.register_buffer("levels", torch.tensor(config.fsq_levels, dtype=torch.float32))
        self.register_buffer("basis", torch.cumprod(torch.tensor([1] + config.fsq_levels[:-1]), 0))
        self.project = nn.Linear(self.raw_dim, config.dim)

    def bound(self, raw: torch.Tensor) -> torch.Tensor:
        half = (self.levels - 1) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(raw + shift) * half - offset

    def codes(self, raw: torch.Tensor) -> torch.Tensor:
        """Quantized values in ``[-(L-1)/2, (L-1)/2]`` per dimension, straight-through."""
        bounded = self.bound(raw)
        return bounded + (bounded.round() - bounded).detach()

    def indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes ``[..., d]`` (values ``-L//2 … L-1-L//2``) -> one code index ``[...]``."""
        digits = (codes + torch.div(self.levels, 2, rounding_mode="floor")).round().long()
        return (digits * self.basis).sum(-1)

    def normalize(self, codes: torch.Tensor) -> torch.Tensor:
        return codes / ((self.levels - 1) / 2)

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None):
        codes = self.codes(raw)
        z = self.project(self.normalize(codes))
        index = self.indices(codes.detach()).reshape(-1)
        counts = torch.bincount(index, minlength=int(self.levels.prod().item())).float()
        probs = counts / counts.sum().clamp(min=1)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
        stats = {"perplexity": perplexity, "codes_used_fraction": (counts > 0).float().mean()}
        return z, raw.new_zeros(()), stats

    def sample(self, shape, generator=None):
        digits = torch.stack([torch.randint(0, int(level), shape, generator=generator) for level in self.levels], -1)
        codes = digits.float() - torch.div(self.levels, 2, rounding_mode="floor")
        with torch.no_grad():
            return self.project(self.normalize(codes))


register(FamilySpec(
    name="fsq", cls=FSQ, config=FSQConfig, coefficient="fsq_levels", short="L", label="FSQ",
    coefficient_label="FSQ levels L", paper_values=([8, 5], [8, 5, 5, 5], [8, 8, 8, 5, 5], [8, 8, 8, 6, 5, 5]),
    parse=parse_levels, order=40,
))
