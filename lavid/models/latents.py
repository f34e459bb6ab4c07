"""Latent-action families: how the IDM's raw output becomes the latent action z, and its regularizer.

Every family has one interface::

    z, loss, stats = family(raw)        # raw: [..., raw_dim] from the IDM; z: [..., dim]

``loss`` is the regularizer L_z (a scalar), ``stats`` a dict of detached scalars for logging.
``family.sample(shape, generator)`` draws latents without an IDM where the family allows it.

Families: ``noisy`` (VAE-like), ``sparse`` (energy-based), ``discrete`` (VQ-VAE), ``fsq`` (finite
scalar quantization), ``none`` (unconstrained) and ``deterministic`` (no latent at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lavid.core.config import check

FAMILIES = ("noisy", "sparse", "discrete", "fsq", "none", "deterministic")


@dataclass
class LatentConfig:
    """The latent-action family and its coefficients (DESIGN.md section 3).

    Attributes:
        family: one of ``noisy, sparse, discrete, fsq, none, deterministic``.
        dim: latent dimension D (128 in the paper).
        beta: noisy: weight of KL(q(z|s_t, s_t+1) || N(0, I)).
        kl_warmup: noisy: share of training over which the KL weight rises linearly from 0 to ``beta``
            (0: full weight from the first step).
        free_bits: noisy: nats per latent dimension not penalized: each dimension's KL (averaged over
            the batch) counts as ``max(KL_d, free_bits)``, so the IDM may put that much information in z
            for free (Kingma et al. 2016). The logged ``latent/kl`` is the true KL.
        l1, l2, variance, covariance, mean: sparse: λ_l1 (swept), λ_l2, λ_V, λ_C, λ_M.
        codebook_size, commitment, reset_every: discrete: codes, commitment weight, and how many
            latents are seen between dead-code resets.
        fsq_levels: fsq: quantization levels per code dimension (codebook = their product).
        sgld_steps, sgld_step_size: sparse: Langevin sampling from the energy.
    """

    family: Literal["noisy", "sparse", "discrete", "fsq", "none", "deterministic"] = "noisy"
    dim: int = 128
    beta: float = 1e-4
    kl_warmup: float = 0.0
    free_bits: float = 0.0
    l1: float = 0.05
    l2: float = 1.0
    variance: float = 0.1
    covariance: float = 0.001
    mean: float = 0.1
    codebook_size: int = 1024
    commitment: float = 0.25
    reset_every: int = 2_500_000
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    sgld_steps: int = 100
    sgld_step_size: float = 0.01

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.dim >= 1, f"{key}dim", f"must be >= 1, got {self.dim}")
        check(self.beta >= 0, f"{key}beta", "must be >= 0")
        check(0 <= self.kl_warmup <= 1, f"{key}kl_warmup", f"must be in [0, 1] (a share of training), got {self.kl_warmup}")
        check(self.free_bits >= 0, f"{key}free_bits", f"must be >= 0 nats, got {self.free_bits}")
        for name in ("l1", "l2", "variance", "covariance", "mean", "commitment"):
            check(getattr(self, name) >= 0, f"{key}{name}", "must be >= 0")
        check(self.codebook_size >= 2, f"{key}codebook_size", "must be >= 2")
        check(self.reset_every >= 1, f"{key}reset_every", "must be >= 1")
        check(len(self.fsq_levels) >= 1 and all(level >= 2 for level in self.fsq_levels), f"{key}fsq_levels",
              f"needs levels >= 2, got {self.fsq_levels}")


def _flat(raw: torch.Tensor) -> torch.Tensor:
    return raw.reshape(-1, raw.shape[-1])


class LatentFamily(nn.Module):
    """Base: ``raw_dim`` is what the IDM must output; ``dim`` is the size of z."""

    raw_dim: int
    dim: int
    uses_idm: bool = True

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"the {type(self).__name__} family has no sampler")

    def set_progress(self, fraction: float) -> None:
        """Told the share of training done before each step (schedules such as the KL warm-up use it)."""


class Noisy(LatentFamily):
    """VAE-like: raw = (mean, log-variance); z ~ N(mean, var) in training, the mean at eval.

    ``L_z = β · w · Σ_d max(KL_d, free_bits)``: ``KL_d`` the KL(N(mean, var) || N(0, I)) of dimension d
    averaged over latents, ``w`` the warm-up weight (0 -> 1 over the first ``kl_warmup`` of training).
    """

    def __init__(self, config: LatentConfig) -> None:
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


class Sparse(LatentFamily):
    """Energy-based sparse latents.

    Per latent: ``E(z) = λ_l2 · max(√D − ||z||_2, 0) + λ_l1 · ||z||_1``. The L1 term pushes entries to
    zero; the norm floor (unsquared L2 norm, so its pull does not vanish near the floor) stops the
    trivial solution z = 0, so the cheapest way to satisfy both is a few large entries: sparsity.
    Per batch Z ``[N, D]``: ``λ_V · mean_d max(1 − std(Z_d), 0)`` keeps every dimension in use,
    ``λ_C · mean_{i≠j} Cov(Z)_ij²`` decorrelates dimensions, and ``λ_M · mean_d |mean(Z_d)|`` (a
    penalty, positive sign) stops all latents sharing one constant offset that would meet the norm
    floor without carrying information. The paper's printed formula leaves the squaring and the sign
    of the mean term ambiguous; this is the reading under which each term blocks a collapse.
    """

    def __init__(self, config: LatentConfig) -> None:
        super().__init__()
        self.dim = self.raw_dim = config.dim
        self.config = config

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """Per-latent energy ``[...]`` (no batch terms)."""
        floor = F.relu(math.sqrt(self.dim) - z.norm(dim=-1))
        return self.config.l2 * floor + self.config.l1 * z.abs().sum(-1)

    def batch_terms(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        flat = _flat(z)
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
        loss = energy + c.variance * terms["variance"] + c.covariance * terms["covariance"] + c.mean * terms["mean"]
        flat = _flat(z.detach())
        stats = {
            "energy": energy.detach(),
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


class Discrete(LatentFamily):
    """VQ-VAE quantization with straight-through gradients and dead-code reset.

    ``L_z = ||sg(z_e) − e||² + commitment · ||z_e − sg(e)||²``. Codes unused over ``reset_every``
    latents are moved onto randomly chosen recent encoder outputs.
    """

    def __init__(self, config: LatentConfig) -> None:
        super().__init__()
        self.dim = self.raw_dim = config.dim
        self.commitment, self.reset_every = config.commitment, config.reset_every
        self.codebook = nn.Parameter(torch.randn(config.codebook_size, config.dim) / math.sqrt(config.dim))
        self.register_buffer("usage", torch.zeros(config.codebook_size))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def quantize(self, z_e: torch.Tensor) -> torch.Tensor:
        """Nearest code index for each latent ``[...] -> [...]`` (long)."""
        flat = _flat(z_e)
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
            flat = _flat(raw)
            picks = torch.randint(0, flat.shape[0], (len(dead),), generator=generator).to(flat.device)
            self.codebook.data[dead] = flat[picks].to(self.codebook.dtype)
        self.usage.zero_()
        self.seen.zero_()

    def sample(self, shape, generator=None):
        indices = torch.randint(0, self.codebook.shape[0], shape, generator=generator)
        return self.codebook.detach()[indices]


class FSQ(LatentFamily):
    """Finite scalar quantization: a few bounded dimensions rounded to fixed levels, then projected to z.

    No codebook to collapse: every one of prod(levels) codes is reachable by construction.
    """

    def __init__(self, config: LatentConfig) -> None:
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


class Unconstrained(LatentFamily):
    """z = raw, no regularizer: the upper bound on capacity (and on leakage)."""

    def __init__(self, config: LatentConfig) -> None:
        super().__init__()
        self.dim = self.raw_dim = config.dim

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None):
        return raw, raw.new_zeros(()), {"z_norm": raw.detach().norm(dim=-1).mean()}


class Deterministic(LatentFamily):
    """No latent action: z is a constant zero vector; the world model must guess the future."""

    uses_idm = False

    def __init__(self, config: LatentConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.raw_dim = 0

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None):
        z = raw.new_zeros(*raw.shape[:-1], self.dim)
        return z, raw.new_zeros(()), {}

    def sample(self, shape, generator=None):
        return torch.zeros(*shape, self.dim)


def make_family(config: LatentConfig) -> LatentFamily:
    classes = {"noisy": Noisy, "sparse": Sparse, "discrete": Discrete, "fsq": FSQ, "none": Unconstrained,
               "deterministic": Deterministic}
    return classes[config.family](config)
