"""The ``sparse`` family: energy-based sparse latents, sampled with Langevin dynamics.

The swept coefficient is λ_l1, the weight of the L1 energy: the reference paper sweeps it from 0.4 (little
capacity) to 0.01 with λ_l2 = 1, λ_V = 0.1, λ_C = 0.001 and λ_M = 0.1 fixed. The variance and covariance
batch terms are VICReg's (Bardes et al. 2022); sampling is stochastic gradient Langevin dynamics (Welling &
Teh 2011) on the per-latent energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from lavid.core.config import check
from lavid.models.latents.base import LatentFamily, flatten_latents
from lavid.models.latents.registry import FamilyConfig, FamilySpec, register


@dataclass
class SparseConfig(FamilyConfig):
    """Attributes:
        l1, l2: λ_l1 (swept) and λ_l2, the weights of the per-latent energy's L1 term and norm floor.
        variance, covariance, mean: λ_V, λ_C and λ_M, the weights of the batch terms.
        sgld_steps, sgld_step_size: Langevin sampling from the energy (steps and step size η).
        energy_warmup: share of training over which the per-latent energy's weight rises linearly from 0 to 1
            (0: the full energy from the first step). The batch terms always apply.
        energy_scale: ``sum`` (the per-latent energy as written) or ``sqrt_dim`` (divided by √D, so that a latent
            on its norm floor pays λ_l1 · ||z||_1 / √D ∈ [λ_l1, λ_l1 · √D] at every latent size, against a
            prediction loss that is a mean over entries).

    The defaults (warm-up 0.5, ``sqrt_dim``) are the measured ones: with ``sum`` and no warm-up the latent stayed
    shut at λ_l1 0.4 and 0.04 (latent gain 1.000, the same error as history alone); a warm-up alone opened 0.04
    only; both open 0.4 and 0.04 (gains 1.23 and 1.83, one-step ÷ copy between history alone and no constraint;
    BENCHMARKS.md, "Issue 35").
    """

    l1: float = 0.05
    l2: float = 1.0
    variance: float = 0.1
    covariance: float = 0.001
    mean: float = 0.1
    sgld_steps: int = 100
    sgld_step_size: float = 0.01
    energy_warmup: float = 0.5
    energy_scale: Literal["sum", "sqrt_dim"] = "sqrt_dim"

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        for name in ("l1", "l2", "variance", "covariance", "mean"):
            check(getattr(self, name) >= 0, f"{key}{name}", "must be >= 0")
        check(0 <= self.energy_warmup <= 1, f"{key}energy_warmup",
              f"must be in [0, 1] (a share of training), got {self.energy_warmup}")
        check(self.energy_scale in ("sum", "sqrt_dim"), f"{key}energy_scale",
              f"must be sum or sqrt_dim, got {self.energy_scale!r}")


class Sparse(LatentFamily):
    """Energy-based sparse latents.

    Per latent: ``E(z) = λ_l2 · max(√D − ||z||_2, 0) + λ_l1 · ||z||_1``. The L1 term pushes entries to
    zero; the norm floor (unsquared L2 norm, so its pull does not vanish near the floor) stops the
    trivial solution z = 0, so the cheapest way to satisfy both is a few large entries: sparsity.
    Per batch Z ``[N, D]``: ``λ_V · mean_d max(1 − std(Z_d), 0)`` keeps every dimension in use,
    ``λ_C · mean_{i≠j} Cov(Z)_ij²`` decorrelates dimensions, and ``λ_M · mean_d |mean(Z_d)|`` (a
    penalty, positive sign) stops all latents sharing one constant offset that would meet the norm
    floor without carrying information. The reference paper's printed formula leaves the squaring and the sign
    of the mean term ambiguous; this is the reading under which each term blocks a collapse.
    The IDM outputs z directly, ``[..., dim]``.

    Args:
        config: ``dim`` and the sparse coefficients (the flat ``model.latent`` config is one).
    """

    def __init__(self, config: SparseConfig) -> None:
        super().__init__()
        self.dim = self.raw_dim = config.dim
        self.config = config
        self.weight = 1.0 if config.energy_warmup == 0 else 0.0  # the energy's warm-up weight (set_progress)

    def set_progress(self, fraction: float) -> None:
        warmup = self.config.energy_warmup
        self.weight = 1.0 if warmup == 0 else min(1.0, max(0.0, fraction) / warmup)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """Per-latent energy ``[...]`` (no batch terms)."""
        floor = F.relu(math.sqrt(self.dim) - z.norm(dim=-1))
        energy = self.config.l2 * floor + self.config.l1 * z.abs().sum(-1)
        return energy / math.sqrt(self.dim) if self.config.energy_scale == "sqrt_dim" else energy

    def batch_terms(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        flat = flatten_latents(z)
        zeros = flat.new_zeros(())
        if flat.shape[0] < 2:
            return {"variance": zeros, "covariance": zeros, "mean": flat.mean(0).abs().mean()}
        std = flat.std(dim=0)
        centered = flat - flat.mean(0)
        cov = centered.T @ centered / (flat.shape[0] - 1)
        off_diagonal = cov - torch.diag(torch.diagonal(cov))
        return {
            "variance": F.relu(1.0 - std).mean(),
            "covariance": off_diagonal.pow(2).sum() / (self.dim * (self.dim - 1)) if self.dim > 1 else zeros,
            "mean": flat.mean(0).abs().mean(),
        }

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None):
        z = raw
        energy = self.energy(z).mean()
        terms = self.batch_terms(z)
        c = self.config
        loss = self.weight * energy + c.variance * terms["variance"] + c.covariance * terms["covariance"] + c.mean * terms["mean"]
        flat = flatten_latents(z.detach())
        stats = {
            "energy": energy.detach(),
            "energy_weight": torch.tensor(self.weight),
            "z_norm": flat.norm(dim=-1).mean(),
            "z_l1": flat.abs().sum(-1).mean(),
            "active_fraction": (flat.abs() > 0.1 * flat.abs().amax(-1, keepdim=True)).float().mean(),
            **{f"{k}_term": v.detach() for k, v in terms.items()},
        }
        return z, loss, stats

    def sample(self, shape, generator=None, steps: int | None = None, step_size: float | None = None):
        """Langevin dynamics on the per-latent energy: ``z ← z − (η/2)∇E(z) + √η ε``."""
        steps = self.config.sgld_steps if steps is None else steps
        eta = self.config.sgld_step_size if step_size is None else step_size
        z = torch.randn(*shape, self.dim, generator=generator)
        for _ in range(steps):
            z = z.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(z).sum(), z)
            z = z - 0.5 * eta * grad + math.sqrt(eta) * torch.randn(z.shape, generator=generator)
        return z.detach()


register(FamilySpec(
    name="sparse", cls=Sparse, config=SparseConfig, coefficient="l1", short="l1", label="sparse (energy)",
    coefficient_label="λ_l1 (L1 weight)", paper_values=(0.4, 0.1, 0.08, 0.06, 0.05, 0.04, 0.02, 0.01),
    parse=float, order=20,
))
