"""The ``none`` family: the IDM's output is z, unregularized: the baseline with the most capacity."""

from __future__ import annotations

import torch

from lavid.models.latents.base import LatentFamily
from lavid.models.latents.registry import FamilyConfig, FamilySpec, register


class Unconstrained(LatentFamily):
    """z = raw ``[..., dim]``, no regularizer: the upper bound on capacity (and on leakage).

    Args:
        config: ``dim`` (the flat ``model.latent`` config is one).
    """

    def __init__(self, config: FamilyConfig) -> None:
        super().__init__()
        self.dim = self.raw_dim = config.dim

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None):
        return raw, raw.new_zeros(()), {"z_norm": raw.detach().norm(dim=-1).mean()}


register(FamilySpec(name="none", cls=Unconstrained, label="unconstrained", order=90))
