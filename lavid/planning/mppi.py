"""Model-predictive path integral's update: a cost-weighted average of every sample.

One iteration of :func:`lavid.planning.planner.plan` draws ``K`` action sequences per episode from
``N(mean, std²)``, clips them to the bounds and costs them; :func:`mppi_update` weights each sample by

    w_k = softmax_k(−(cost_k − min cost) / temperature)

and returns the weighted mean and the weighted standard deviation around it (as TD-MPC2 does; classic
MPPI keeps the std fixed, which cannot narrow onto a minimum). A low temperature tends to the single
best sample, a high one to the plain average. Every episode's row is computed on its own, so a batch of
episodes gives the same numbers as one episode at a time.
"""

from __future__ import annotations

import torch


def mppi_update(samples: torch.Tensor, cost: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The next sampling Gaussian from one round of costed samples.

    Args:
        samples: ``[E, K, H, A]`` the clipped action sequences that were costed.
        cost: ``[E, K]`` their costs (lower is better).
        temperature: ``> 0``, in units of cost.

    Returns:
        ``(mean, std)``, both ``[E, H, A]``: the weighted mean of the samples and their weighted std.
    """
    best = cost.min(dim=1, keepdim=True).values
    weights = torch.softmax(-(cost - best) / temperature, dim=1)[:, :, None, None]  # [E, K, 1, 1]
    mean = (weights * samples).sum(dim=1)
    std = (weights * (samples - mean[:, None]).pow(2)).sum(dim=1).sqrt()
    return mean, std
