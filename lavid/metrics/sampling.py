"""Rollouts driven by latents sampled without an IDM, where the family allows it.

Samplers (``family.sample``): the N(0, I) prior for ``noisy``, random codebook entries for ``discrete``,
random level combinations for ``fsq``, Langevin dynamics on the energy for ``sparse``, and the zero
latent of ``deterministic``. ``none`` (unconstrained) has no prior to sample from.

Metrics over ``K`` sampled futures per context: the mean and best-of-K error against the true future
(best-of-K falls as samples cover the real futures), and the spread (mean L1 between two samples'
rollouts; 0 means sampled latents do not change the prediction).
"""

from __future__ import annotations

import torch


def has_sampler(model) -> bool:
    """Whether the model's latent family can draw latents without an IDM."""
    from lavid.models.latents import LatentFamily

    return type(model.family).sample is not LatentFamily.sample


@torch.no_grad()
def sampled_rollouts(model, context: torch.Tensor, horizon: int, samples: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``context [B, S0, N, D]`` -> ``[B, K, H, N, D]`` rollouts, each driven by its own sampled latents.

    The context's own transitions use the IDM's latents; the ``H`` future transitions are sampled.
    """
    batch, observed = context.shape[:2]
    own = model.infer_latents(context)[0] if observed > 1 else context.new_zeros(batch, 0, model.family.dim)
    with torch.enable_grad():  # Langevin sampling differentiates the energy
        future = model.family.sample((batch * samples, horizon), generator=generator)
    future = future.to(context.device, context.dtype)
    latents = torch.cat([own.repeat_interleave(samples, 0), future], dim=1)
    rolled = model.rollout(context.repeat_interleave(samples, 0), latents)
    return rolled.reshape(batch, samples, *rolled.shape[1:])


def sample_metrics(rollouts: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per context: ``rollouts [B, K, H, N, D]`` vs ``truth [B, H, N, D]`` -> ``error_mean``, ``error_best``
    and ``spread`` (mean L1 between two different samples' rollouts; NaN for K = 1), each ``[B]``."""
    errors = (rollouts - truth[:, None]).abs().flatten(2).mean(-1)  # [B, K]
    samples = rollouts.shape[1]
    if samples > 1:
        flat = rollouts.flatten(2)
        pairwise = torch.stack([(flat[:, i] - flat[:, j]).abs().mean(-1)
                                for i in range(samples) for j in range(i + 1, samples)], dim=1)
        spread = pairwise.mean(1)
    else:
        spread = torch.full((rollouts.shape[0],), float("nan"), device=rollouts.device)
    return {"error_mean": errors.mean(1), "error_best": errors.min(1).values, "spread": spread}
