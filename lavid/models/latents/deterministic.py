"""The ``deterministic`` family: no latent action (z = 0, no IDM): the baseline that predicts from history alone."""

from __future__ import annotations

import torch

from lavid.models.latents.base import LatentFamily
from lavid.models.latents.registry import FamilyConfig, FamilySpec, register


class Deterministic(LatentFamily):
    """No latent action: z is a constant zero vector ``[..., dim]``; the world model must guess the future.

    Args:
        config: ``dim`` (the flat ``model.latent`` config is one).
    """

    uses_idm = False

    def __init__(self, config: FamilyConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.raw_dim = 0

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None):
        z = raw.new_zeros(*raw.shape[:-1], self.dim)
        return z, raw.new_zeros(()), {}

    def sample(self, shape, generator=None):
        return torch.zeros(*shape, self.dim)


register(FamilySpec(name="deterministic", cls=Deterministic, label="deterministic (no latent)", order=100))
