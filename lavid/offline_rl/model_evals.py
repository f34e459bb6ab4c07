"""Held-out checks of a :class:`~lavid.offline_rl.state_world_model.StateWorldModel`: does its dynamics
use the latent, and does its decoder turn latents into the actions that were taken?

Scored on episodes the model saw without actions (or not at all), with their true actions given back
for scoring only -- they never reach training. The numbers are lavid's headline ones, on vectors:

- ``dynamics_vs_copy``: one-step error of ``o + f(o, z)`` with ``z`` the IDM's posterior mean ÷ the error
  of predicting ``o' = o`` (both on normalised observations; < 1: the model predicts motion);
- ``latent_gain``: that error with the latents shuffled across transitions ÷ with the right ones (> 1: the
  dynamics reads z);
- ``decoder_r2``: R² of the actions decoded from the IDM's mean latent, ``p(a | o, IDM(o, o'))``, against
  the true actions, pooled over action dimensions (0: no better than the mean action);
- ``decoder_r2_action_z``: the same from the action encoder's mean latent, ``q(z | o, a)`` -- a round trip
  a -> z -> a that needs no IDM;
- ``pseudo_label_r2`` (models with ``pseudo > 0``): R² of the supervised IDM's pseudo-labels ``g(o, o' - o)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lavid.offline_rl.state_world_model import StateWorldModel
from lavid.offline_rl.offline_data import OfflineDataError, OfflineEpisode, Transitions


def r2_score(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """``1 - SS_res / SS_tot`` pooled over all entries of ``[N, A]``, each column centred on its own mean (one
    number for the whole action; :func:`lavid.metrics.probe.r2_scores` gives one per dimension)."""
    total = (truth - truth.mean(0)).pow(2).sum()
    return float(1 - (pred - truth).pow(2).sum() / total.clamp_min(1e-12))


@torch.no_grad()
def model_metrics(model: StateWorldModel, episodes: list[OfflineEpisode], seed: int = 0) -> dict[str, float]:
    """Score ``model`` on ``episodes``, which must carry their actions (see the module docstring)."""
    if not episodes or any(not ep.labeled for ep in episodes):
        raise OfflineDataError("model_metrics needs episodes with their actions (for scoring only)")
    data = Transitions.from_episodes(episodes)
    device = model.obs_mean.device
    x, x_next = model.normalize(data.obs.to(device)), model.normalize(data.next_obs.to(device))
    action = data.action.to(device)
    z = model.idm(torch.cat([x, x_next], dim=-1))[0]
    z_action = model.action_encoder(torch.cat([x, action], dim=-1))[0]
    shuffled = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(seed)).to(device)]
    copy = F.mse_loss(x, x_next)
    right = F.mse_loss(model.step(x, z)[0], x_next)
    wrong = F.mse_loss(model.step(x, shuffled)[0], x_next)
    metrics = {
        "dynamics_vs_copy": float(right / copy.clamp_min(1e-12)),
        "latent_gain": float(wrong / right.clamp_min(1e-12)),
        "decoder_r2": r2_score(model.decode(x, z), action),
        "decoder_r2_action_z": r2_score(model.decode(x, z_action), action),
    }
    if model.action_idm is not None:
        metrics["pseudo_label_r2"] = r2_score(model.label(x, x_next), action)
    return metrics
