"""SIGReg: keep embeddings spread out by testing their 1-D projections against a standard normal.

An encoder trained end to end on a prediction loss can make every frame alike (the loss then falls to
zero and the features carry nothing). SIGReg (LeJEPA, Balestriero & LeCun 2025; used by LeWM) adds the
Epps–Pulley statistic of the embeddings along random unit directions: for projections ``x_1..x_N``,

    N · ∫ |φ_N(t) − e^{−t²/2}|² e^{−t²/2} dt,    φ_N(t) = (1/N) Σ_j e^{i t x_j},

the weighted distance between their empirical characteristic function and that of N(0, 1), integrated by
the trapezoid rule on ``knots`` points of ``[0, t_max]``, averaged over directions. It is ≈ 0.5 on
samples of N(0, I) and grows without bound as the embeddings collapse (hundreds on constant ones).
"""

from __future__ import annotations

import torch


def epps_pulley(projections: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """``[N, M]`` samples of M 1-D distributions -> ``[M]`` Epps–Pulley statistics against N(0, 1)."""
    t = torch.linspace(0, t_max, knots, device=projections.device, dtype=projections.dtype)
    xt = projections.unsqueeze(-1) * t  # [N, M, K]
    gauss = torch.exp(-0.5 * t**2)
    error = (xt.cos().mean(0) - gauss) ** 2 + xt.sin().mean(0) ** 2  # [M, K]
    weights = torch.full_like(t, t_max / (knots - 1))
    weights[0] = weights[-1] = weights[0] / 2
    return projections.shape[0] * (error * weights * gauss).sum(-1)


def sigreg(embeddings: torch.Tensor, directions: int = 256, generator: torch.Generator | None = None,
           knots: int = 17) -> torch.Tensor:
    """Mean Epps–Pulley statistic of ``[N, D]`` embeddings along ``directions`` random unit vectors.

    The statistic is computed in float32 (it sums cosines of large arguments).
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"sigreg needs [N >= 2, D] embeddings, got {tuple(embeddings.shape)}")
    x = embeddings.float()
    basis = torch.randn(x.shape[1], directions, device=x.device, generator=generator)
    basis = basis / basis.norm(dim=0, keepdim=True)
    return epps_pulley(x @ basis, knots).mean()
