"""Linear probe from latent actions to real actions (where clips have them: DMControl, Jaco).

The probe is ridge regression with a bias on standardized latents, fit on the training split's
transitions and scored on held-out episodes by R² per action dimension. The ridge strength is chosen
by 5-fold cross-validation on the training transitions (latents often have more dimensions than a
small eval set has transitions per task, where an unregularized fit would only memorize). A latent that is a linear map of
the action scores R² ≈ 1; a latent that ignores the action scores ≈ 0 (or below, on held-out data).
"""

from __future__ import annotations

import torch

from lavid.data.actions import transition_actions  # noqa: F401  (re-exported: older imports read it here)


def fit_ridge(inputs: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3):
    """Fit ``targets ≈ standardize(inputs) @ W + b``; returns a function applying the fit. Inputs ``[M, C]``."""
    inputs, targets = inputs.double(), targets.double()
    mean, std = inputs.mean(0), inputs.std(0).clamp(min=1e-6)
    x = torch.cat([(inputs - mean) / std, torch.ones(len(inputs), 1, dtype=torch.float64)], dim=1)
    penalty = ridge * len(inputs) * torch.eye(x.shape[1], dtype=torch.float64)
    penalty[-1, -1] = 0.0  # no penalty on the bias
    weights = torch.linalg.solve(x.T @ x + penalty, x.T @ targets)

    def apply(new_inputs: torch.Tensor) -> torch.Tensor:
        z = (new_inputs.double() - mean) / std
        return torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], dim=1) @ weights

    return apply


def r2_scores(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """R² per output dimension ``[A]`` (dimensions that never vary in ``target`` give NaN)."""
    prediction, target = prediction.double(), target.double()
    residual = (target - prediction).pow(2).sum(0)
    total = (target - target.mean(0)).pow(2).sum(0)
    return torch.where(total > 1e-12, 1.0 - residual / total.clamp(min=1e-12), torch.full_like(total, float("nan")))


RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def choose_ridge(latents: torch.Tensor, actions: torch.Tensor, folds: int = 5) -> float:
    """The ridge strength with the lowest held-out squared error over ``folds`` contiguous folds."""
    count = len(latents)
    if count < 2 * folds:
        return 1.0
    edges = torch.linspace(0, count, folds + 1).long().tolist()
    best, best_error = RIDGES[0], float("inf")
    for ridge in RIDGES:
        error = 0.0
        for k in range(folds):
            test = torch.zeros(count, dtype=torch.bool)
            test[edges[k] : edges[k + 1]] = True
            apply = fit_ridge(latents[~test], actions[~test], ridge)
            error += (apply(latents[test]) - actions[test].double()).pow(2).sum().item()
        if error < best_error:
            best, best_error = ridge, error
    return best


def linear_probe(train_latents: torch.Tensor, train_actions: torch.Tensor, test_latents: torch.Tensor,
                 test_actions: torch.Tensor, ridge: float | None = None) -> dict[str, object]:
    """Fit on train, score on test. Latents ``[M, C]``, actions ``[M, A]``.

    Args:
        ridge: the ridge strength (relative to the number of samples); ``None`` chooses it by
            cross-validation on the training transitions.

    Returns:
        ``r2`` (list per action dimension), ``r2_mean`` (over dimensions that vary) and ``ridge``.
    """
    if len(train_latents) < 2 or len(test_latents) < 1:
        raise ValueError(f"a probe needs >= 2 training and >= 1 test transitions, got {len(train_latents)} and "
                         f"{len(test_latents)}")
    ridge = choose_ridge(train_latents, train_actions) if ridge is None else ridge
    apply = fit_ridge(train_latents, train_actions, ridge)
    scores = r2_scores(apply(test_latents), test_actions)
    valid = scores[~torch.isnan(scores)]
    return {"r2": [float(s) for s in scores], "r2_mean": float(valid.mean()) if len(valid) else float("nan"),
            "ridge": ridge}
