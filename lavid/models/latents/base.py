"""The interface every latent-action family implements: how the IDM's raw output becomes z, and its regularizer.

Every family has one interface::

    z, loss, stats = family(raw)        # raw: [..., raw_dim] from the IDM; z: [..., dim]

``loss`` is the regularizer L_z (a scalar), ``stats`` a dict of detached scalars for logging.
``family.sample(shape, generator)`` draws latents without an IDM where the family allows it.
"""

from __future__ import annotations

import torch
from torch import nn


def flatten_latents(raw: torch.Tensor) -> torch.Tensor:
    """``[..., D]`` -> ``[N, D]``: every latent of a batch as one row."""
    return raw.reshape(-1, raw.shape[-1])


class LatentFamily(nn.Module):
    """Base: ``raw_dim`` is what the IDM must output; ``dim`` is the size of z.

    Attributes:
        raw_dim: entries of the IDM's output per latent (0: the family needs no IDM).
        dim: entries of z.
        uses_idm: whether the world model builds an IDM for this family.
    """

    raw_dim: int
    dim: int
    uses_idm: bool = True

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The latent action and its regularizer.

        Args:
            raw: the IDM's output ``[..., raw_dim]``.
            generator: random numbers for the families that draw any (noise, dead-code resets).

        Returns:
            ``(z [..., dim], L_z (a scalar), stats {name: detached scalar})``.
        """
        raise NotImplementedError

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents ``[*shape, dim]`` drawn without an IDM (families that have a sampler override this)."""
        raise NotImplementedError(f"the {type(self).__name__} family has no sampler")

    def set_progress(self, fraction: float) -> None:
        """Told the share of training done before each step (schedules such as the KL warm-up use it)."""
