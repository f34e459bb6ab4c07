"""Probes from latent actions to real actions (where clips have them: DMControl, Jaco): linear and MLP.

:func:`linear_probe` is ridge regression with a bias on standardized latents, fit on the training split's
transitions and scored on held-out episodes by R² per action dimension. The ridge strength is chosen
by 5-fold cross-validation on the training transitions (latents often have more dimensions than a
small eval set has transitions per task, where an unregularized fit would only memorize). A latent that is a linear map of
the action scores R² ≈ 1; a latent that ignores the action scores ≈ 0 (or below, on held-out data).

A linear readout is capped here: even the true poses at t and t+1 explain only about 0.3 of the
DMControl actions linearly, against about 0.5 through a small MLP (``benchmarks/action_ceiling.py``).
So :func:`mlp_probe` fits a small seeded MLP on the same split, early-stopped on a validation part of
the training transitions: it tells a latent that carries the action nonlinearly from one that does not
carry it. Both are best read against their ceilings, the same probe from the true poses of the same
transitions (:func:`lavid.metrics.latent_evals.probe_metrics`).
"""

from __future__ import annotations

import copy

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


MLP_MIN_TRAIN = 5
"""The fewest training transitions :func:`mlp_probe` accepts (at least one is held back for validation)."""


def mlp_probe(train_latents: torch.Tensor, train_actions: torch.Tensor, test_latents: torch.Tensor,
              test_actions: torch.Tensor, hidden: int = 128, validation: float = 0.2, max_steps: int = 600,
              check_every: int = 20, patience: int = 8, batch_size: int = 256, lr: float = 3e-3,
              weight_decay: float = 1e-2, seed: int = 0, return_prediction: bool = False) -> dict[str, object]:
    """A small MLP probe: fit on train (early-stopped on its last ``validation`` part), score on test.

    Latents ``[M, C]``, actions ``[M, A]``. Inputs are standardized by the training latents' statistics
    and targets by the training actions' (so every action dimension weighs the same in the loss). The
    MLP has two hidden layers of ``hidden`` GELU units and is trained with AdamW on minibatches; the
    last ``validation`` fraction of the training transitions, one contiguous block (like the ridge's
    cross-validation folds: whole episodes, mostly), is held back, its error checked every ``check_every``
    steps, and the weights with the lowest validation error are kept (training stops after ``patience``
    checks without improvement, or at ``max_steps``). The output layer starts at zero, so the MLP starts as
    the training mean (R² ≈ 0): where nothing beats it on validation (too few transitions, unrelated
    latents), that is what is scored, not a random network. Initialization and minibatches come from ``seed``
    alone (the global random state is left as it was): the same inputs and seed give the same result.
    On a few thousand transitions it takes about a second on one CPU thread.

    Returns:
        ``r2`` (list per action dimension), ``r2_mean`` (over dimensions that vary), ``steps`` (the
        optimizer step of the kept weights) and ``validation_mse`` (their validation error, in standardized
        action units); with ``return_prediction``, also ``prediction``: the probe's test outputs ``[M_test, A]``.

    Raises:
        ValueError: fewer than :data:`MLP_MIN_TRAIN` training or no test transitions.
    """
    count = len(train_latents)
    if count < MLP_MIN_TRAIN or len(test_latents) < 1:
        raise ValueError(f"an MLP probe needs >= {MLP_MIN_TRAIN} training and >= 1 test transitions, got {count} "
                         f"and {len(test_latents)}")
    x, y = train_latents.float(), train_actions.float()
    x_mean, x_std = x.mean(0), x.std(0)
    # an input constant on the training transitions says nothing there; where it moves on the test ones
    # (a feature that fires only on held-out poses) a tiny std would blow it up: it is read as 0 instead
    x_std = torch.where(x_std > 1e-6, x_std, torch.full_like(x_std, float("inf")))
    y_mean, y_std = y.mean(0), y.std(0).clamp(min=1e-6)
    x, y = (x - x_mean) / x_std, (y - y_mean) / y_std
    held = min(max(1, round(validation * count)), count - 2)
    fit_x, fit_y, val_x, val_y = x[: count - held], y[: count - held], x[count - held :], y[count - held :]

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # layers initialize from the global generator: seed it, then restore
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
                                  torch.nn.GELU(), torch.nn.Linear(hidden, y.shape[1]))
    torch.nn.init.zeros_(net[-1].weight)  # it starts as the training mean: what it keeps must beat that on validation
    torch.nn.init.zeros_(net[-1].bias)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)

    def validation_error() -> float:
        with torch.no_grad():
            return (net(val_x) - val_y).pow(2).mean().item()

    best_error, best_step, best_state, waited = validation_error(), 0, copy.deepcopy(net.state_dict()), 0
    batch = min(batch_size, len(fit_x))
    with torch.enable_grad():
        for step in range(1, max_steps + 1):
            index = torch.randint(len(fit_x), (batch,), generator=generator)
            loss = (net(fit_x[index]) - fit_y[index]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % check_every == 0:
                error = validation_error()
                if error < best_error:
                    best_error, best_step, best_state, waited = error, step, copy.deepcopy(net.state_dict()), 0
                else:
                    waited += 1
                    if waited >= patience:
                        break
    net.load_state_dict(best_state)
    with torch.no_grad():
        prediction = net((test_latents.float() - x_mean) / x_std) * y_std + y_mean
    scores = r2_scores(prediction, test_actions)
    valid = scores[~torch.isnan(scores)]
    result = {"r2": [float(s) for s in scores], "r2_mean": float(valid.mean()) if len(valid) else float("nan"),
              "steps": best_step, "validation_mse": best_error}
    return {**result, "prediction": prediction} if return_prediction else result
