"""The cross-entropy method's update: refit the sampling Gaussian to the lowest-cost samples.

One iteration of :func:`lavid.planning.planner.plan` draws ``K`` action sequences per episode from
``N(mean, std²)``, clips them to the bounds and costs them; :func:`cem_update` then keeps the ``elites``
cheapest and moves the Gaussian toward their statistics:

    mean' = momentum · mean + (1 − momentum) · elite mean
    std'  = momentum · std  + (1 − momentum) · elite std     (population std, over the elites)

Everything is batched over episodes; every episode's row is computed on its own (no statistic mixes
episodes), so a batch of episodes gives the same numbers as one episode at a time.
"""

from __future__ import annotations

import torch


def cem_update(samples: torch.Tensor, cost: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
               elites: int, momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The next sampling Gaussian from one round of costed samples.

    Args:
        samples: ``[E, K, H, A]`` the clipped action sequences that were costed.
        cost: ``[E, K]`` their costs (lower is better).
        mean: ``[E, H, A]`` the Gaussian they were drawn from.
        std: ``[E, H, A]``.
        elites: how many of the cheapest samples of each episode to fit (``1 <= elites <= K``).
        momentum: share of the old mean and std kept, in ``[0, 1)``.

    Returns:
        ``(mean, std)``, both ``[E, H, A]``. Ties in cost go to the lower sample index.
    """
    order = cost.argsort(dim=1, stable=True)[:, :elites]  # [E, elites]
    elite = samples.gather(1, order[:, :, None, None].expand(-1, -1, *samples.shape[2:]))  # [E, elites, H, A]
    elite_mean = elite.mean(dim=1)
    elite_std = (elite - elite_mean[:, None]).pow(2).mean(dim=1).sqrt()
    return momentum * mean + (1 - momentum) * elite_mean, momentum * std + (1 - momentum) * elite_std
