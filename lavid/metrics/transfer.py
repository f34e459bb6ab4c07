"""Cycle-consistency transfer of latent actions between videos (the reference paper's; docs/reference.md).

For a pair of clips A and B:

    z_A      = g(A)                                  the IDM's latents of A's transitions
    B̂        = rollout(B_0, z_A)                     B driven by A's latents
    z'       = g(B_0, B̂_1, ..., B̂_H)                 latents re-inferred from B's predicted steps
    Â_cycle  = rollout(A_0, z')                      A driven by the latents that came back
    Â_own    = rollout(A_0, z_A)                     A driven by its own latents

``ratio = error(Â_cycle, A) / error(Â_own, A)``: 1 when the latent's meaning survives the trip through
another video; large when it only made sense in A's scene. Paper: ×1.03 (discrete) … ×1.34 (noisy-high).
Errors are mean L1 in representation space over the ``H`` predicted steps.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def cycle_transfer(model, states_a: torch.Tensor, targets_a: torch.Tensor, states_b: torch.Tensor,
                   horizon: int) -> dict[str, torch.Tensor]:
    """Run the A -> B -> A cycle for a batch of pairs.

    Args:
        model: a world model (``infer_latents``, ``rollout``).
        states_a, targets_a: ``[B, S, N, D]`` clip A (context and target representations).
        states_b: ``[B, S', N, D]`` clip B (only its first step is used as context).
        horizon: steps ``H`` to transfer, ``1 <= H <= S - 1``.

    Returns:
        ``own`` and ``cycle`` per-clip errors ``[B]``, and the predicted representations ``b_driven``,
        ``a_own``, ``a_cycle`` ``[B, H, N, D]`` and latents ``z_a``, ``z_back`` ``[B, H, C]``.
    """
    steps = states_a.shape[1]
    if not 1 <= horizon <= steps - 1:
        raise ValueError(f"horizon must be in [1, {steps - 1}] for clips of {steps} steps, got {horizon}")
    z_a = model.infer_latents(states_a)[0][:, :horizon]
    b_driven = model.rollout(states_b[:, :1], z_a)
    z_back = model.infer_latents(torch.cat([states_b[:, :1], b_driven], dim=1))[0]
    a_own = model.rollout(states_a[:, :1], z_a)
    a_cycle = model.rollout(states_a[:, :1], z_back)
    truth = targets_a[:, 1 : 1 + horizon]

    def error(prediction):
        return (prediction - truth).abs().flatten(1).mean(-1)

    return {"own": error(a_own), "cycle": error(a_cycle), "b_driven": b_driven, "a_own": a_own,
            "a_cycle": a_cycle, "z_a": z_a, "z_back": z_back}


def summarize(result: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean errors over pairs and ``ratio = cycle / own``."""
    own, cycle = result["own"].mean().item(), result["cycle"].mean().item()
    return {"transfer/error_own": own, "transfer/error_cycle": cycle,
            "transfer/ratio": cycle / own if own > 0 else float("nan"), "transfer/pairs": int(result["own"].numel())}
