"""The ``discrete`` family: VQ-VAE codes (van den Oord et al. 2017) with dead-code reset.

The swept coefficient is the codebook size K: the reference paper sweeps 16, 1024, 4096 and 32768 codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lavid.core.config import check
from lavid.models.latents.base import LatentFamily, flatten_latents
from lavid.models.latents.registry import FamilyConfig, FamilySpec, register


@dataclass
class DiscreteConfig(FamilyConfig):
    """Attributes:
        codebook_size: codes K (swept).
        commitment: weight of the commitment loss ``||z_e − sg(e)||²``.
        reset_every: latents seen between dead-code resets.
    """

    codebook_size: int = 1024
    commitment: float = 0.25
    reset_every: int = 2_500_000

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.commitment >= 0, f"{key}commitment", "must be >= 0")
        check(self.codebook_size >= 2, f"{key}codebook_size", "must be >= 2")
        check(self.reset_every >= 1, f"{key}reset_every", "must be >= 1")


class Discrete(LatentFamily):
    """VQ-VAE quantization with straight-through gradients and dead-code reset.

    ``L_z = ||sg(z_e) − e||² + commitment · ||z_e − sg(e)||²``. Codes unused over ``reset_every``
    latents are moved onto randomly chosen recent encoder outputs. The IDM outputs z_e ``[..., dim]``; the
    codebook is ``[codebook_size, dim]``.

    Args:
        config: ``dim`` and the discrete coefficients (the flat ``model.latent`` config is one).
    """

    def __init__(self, config: DiscreteConfig) -> None:
        super().__init__()
        self.dim = self.raw_dim = config.dim
        self.commitment, self.reset_every = config.commitment, config.reset_every
        self.codebook = nn.Parameter(torch.randn(config.codebook_size, config.dim) / math.sqrt(config.dim))
        self.register_buffer("usage", torch.zeros(config.codebook_size))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def quantize(self, z_e: torch.Tensor) -> torch.Tensor:
        """Nearest code index for each latent ``[...] -> [...]`` (long)."""
        flat = flatten_latents(z_e)
        distances = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(-1)
        return distances.argmin(-1).view(z_e.shape[:-1])

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None):
        indices = self.quantize(raw)
        codes = self.codebook[indices]
        loss = F.mse_loss(codes, raw.detach()) + self.commitment * F.mse_loss(raw, codes.detach())
        z = raw + (codes - raw).detach()  # straight-through
        counts = torch.bincount(indices.reshape(-1), minlength=self.codebook.shape[0]).float()
        if self.training:
            self._track_and_reset(raw.detach(), counts, generator)
        probs = counts / counts.sum().clamp(min=1)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
        stats = {"perplexity": perplexity, "codes_used_fraction": (counts > 0).float().mean(),
                 "codebook_active_fraction": (self.usage > 0).float().mean()}
        return z, loss, stats

    @torch.no_grad()
    def _track_and_reset(self, raw: torch.Tensor, counts: torch.Tensor, generator) -> None:
        self.usage += counts
        self.seen += int(counts.sum().item())
        if int(self.seen.item()) < self.reset_every:
            return
        dead = (self.usage == 0).nonzero().flatten()
        if len(dead):
            flat = flatten_latents(raw)
            picks = torch.randint(0, flat.shape[0], (len(dead),), generator=generator).to(flat.device)
            self.codebook.data[dead] = flat[picks].to(self.codebook.dtype)
        self.usage.zero_()
        self.seen.zero_()

    def sample(self, shape, generator=None):
        indices = torch.randint(0, self.codebook.shape[0], shape, generator=generator)
        return self.codebook.detach()[indices]


register(FamilySpec(
    name="discrete", cls=Discrete, config=DiscreteConfig, coefficient="codebook_size", short="K",
    label="discrete (VQ-VAE)", coefficient_label="codebook size K", paper_values=(16, 1024, 4096, 32768),
    parse=int, order=30,
))
