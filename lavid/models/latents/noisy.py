"""The ``noisy`` family: VAE-like latents under a KL penalty to N(0, I) (Kingma & Welling 2014).

The swept coefficient is β, the KL weight: the reference paper sweeps it from 5e-3 (little capacity) to 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lavid.core.config import check
from lavid.models.latents.base import LatentFamily
from lavid.models.latents.registry import FamilyConfig, FamilySpec, register


@dataclass
class NoisyConfig(FamilyConfig):
    """Attributes:
        beta: weight of KL(q(z|s_t, s_t+1) || N(0, I)).
        kl_warmup: share of training over which the KL weight rises linearly from 0 to ``beta``
            (0: full weight from the first step).
        free_bits: nats per latent dimension not penalized: each dimension's KL (averaged over the batch)
            counts as ``max(KL_d, free_bits)``, so the IDM may put that much information in z for free
            (Kingma et al. 2016). The logged ``latent/kl`` is the true KL.
    """

    beta: float = 1e-4
    kl_warmup: float = 0.0
    free_bits: float = 0.0

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.beta >= 0, f"{key}beta", "must be >= 0")
        check(0 <= self.kl_warmup <= 1, f"{key}kl_warmup",
              f"must be in [0, 1] (a share of training), got {self.kl_warmup}")
        check(self.free_bits >= 0, f"{key}free_bits", f"must be >= 0 nats, got {self.free_bits}")


class Noisy(LatentFamily):
    """VAE-like: raw = (mean, log-variance); z ~ N(mean, var) in training, the mean at eval.

    ``L_z = β · w · Σ_d max(KL_d, free_bits)``: ``KL_d`` the KL(N(mean, var) || N(0, I)) of dimension d
    averaged over latents, ``w`` the warm-up weight (0 -> 1 over the first ``kl_warmup`` of training).
    The IDM outputs ``[..., 2·dim]`` (mean, log-variance); z is ``[..., dim]``.

    Args:
        config: ``dim`` and the noisy coefficients (the flat ``model.latent`` config is one).
    """

    def __init__(self, config: NoisyConfig) -> None:
        super().__init__()
        self.dim, self.raw_dim, self.beta = config.dim, 2 * config.dim, config.beta
        self.kl_warmup, self.free_bits = config.kl_warmup, config.free_bits
        self.weight = 1.0 if config.kl_warmup == 0 else 0.0  # until set_progress says otherwise

    def set_progress(self, fraction: float) -> None:
        self.weight = 1.0 if self.kl_warmup == 0 else min(1.0, max(0.0, fraction) / self.kl_warmup)

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None):
        mean, logvar = raw.chunk(2, dim=-1)
        logvar = logvar.clamp(-30.0, 20.0)
        if self.training:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + noise * torch.exp(0.5 * logvar)
        else:
            z = mean
        kl_per_dim = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).reshape(-1, self.dim).mean(0)  # [C]
        kl = kl_per_dim.sum()
        penalized = kl_per_dim.clamp(min=self.free_bits).sum() if self.free_bits > 0 else kl
        stats = {"kl": kl.detach(), "z_norm": z.detach().norm(dim=-1).mean(),
                 "posterior_std": torch.exp(0.5 * logvar).detach().mean(),
                 "kl_weight": kl.new_tensor(self.beta * self.weight)}
        return z, self.beta * self.weight * penalized, stats

    def sample(self, shape, generator=None):
        return torch.randn(*shape, self.dim, generator=generator)


register(FamilySpec(
    name="noisy", cls=Noisy, config=NoisyConfig, coefficient="beta", short="beta", label="noisy (VAE)",
    coefficient_label="β (KL weight)", paper_values=(5e-3, 1e-3, 5e-4, 1e-4, 5e-5, 1e-5, 5e-6, 1e-6),
    parse=float, order=10,
))
