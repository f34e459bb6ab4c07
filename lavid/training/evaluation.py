"""Held-out evaluation during training: one-step, copy, shuffled-condition and rollout errors, and a picture.

Every error compares a prediction with the TARGET representation of the true next step (the EMA
encoder's in ``ema`` mode). The copy baseline compares target with target, so a model that only learns
that consecutive online features are close cannot look better than predicting no change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

GAIN_USED = 1.02
"""``eval/latent_gain`` at or above this says the predictor uses its condition (see :func:`condition_verdict`)."""


@torch.no_grad()
def held_out_states(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context states, target states)`` ``[B, S, N, D]`` of a batch of frames or cached features."""
    if "features" in batch:
        states = model.states_of(batch["features"].float())
        return states, states
    states = model.encode(batch["frames"])
    targets = model.encode(batch["frames"], target=True) if model.target_encoder is not None else states
    return states, targets


@torch.no_grad()
def transition_errors(model, states: torch.Tensor, targets: torch.Tensor,
                      cond: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-clip errors ``[B]`` of every transition of clips ``[B, S, N, D]`` with conditions ``cond [B, S-1, C]``.

    Returns:
        ``one_step`` / ``one_step_mse``: teacher-forced prediction (L1 / squared) with the clips' own
        conditions; ``copy`` / ``copy_mse``: predicting no change, target step ``t`` for target step
        ``t+1``; ``shuffled``: the one-step L1 error with the conditions rolled by one clip across the batch
        (``torch.roll(cond, 1, dims=0)``: another clip's latents or actions). ``shuffled`` ≈ ``one_step``
        means the predictor ignores its condition.
    """
    future = targets[:, 1:]
    error = model.predict(states[:, :-1], cond) - future
    copy = targets[:, :-1] - future
    shuffled = model.predict(states[:, :-1], torch.roll(cond, 1, dims=0)) - future
    return {"one_step": error.abs().flatten(1).mean(-1), "one_step_mse": error.pow(2).flatten(1).mean(-1),
            "copy": copy.abs().flatten(1).mean(-1), "copy_mse": copy.pow(2).flatten(1).mean(-1),
            "shuffled": shuffled.abs().flatten(1).mean(-1)}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


@torch.no_grad()
def evaluate(model, batches: list[dict[str, torch.Tensor]], horizon: int,
             all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Held-out errors (mean over batches; lower is better) and how much the predictor uses its condition.

    Args:
        batches: held-out batches of ``frames`` or ``features``, with ``actions`` for an action-conditioned
            model.
        horizon: rollout steps.
        all_reduce: sums a tensor over processes (``None``: one process), so every ratio is one of global
            means and ``latent/spread`` is over every process's transitions.

    Returns:
        ``eval/one_step``, ``eval/one_step_mse``: teacher-forced L1 / squared error with the model's own
        conditions (IDM latents, or true actions); ``eval/copy``, ``eval/copy_mse``: predicting no change
        (target vs target); ``eval/ratio`` = one_step / copy (below 1 beats copying); ``eval/shuffled``:
        one-step L1 with the conditions rolled by one clip across the batch; ``eval/latent_gain`` =
        shuffled / one_step (1.0 when the condition is ignored, exactly 1 for the ``deterministic``
        family); ``eval/rollout_h{k}`` (k-th autoregressive step from one context step, with the true
        clip's conditions) and ``eval/rollout_mean``; for latent models ``latent/spread``: the std of z
        over all held-out transitions, averaged over dimensions, divided by the RMS of z (+1e-8): about 1
        when latents vary as much as they are large, near 0 when every transition gets the same latent.
    """
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    moments = None  # [count, sum z (C), sum z² (C)] over transitions, latent models only
    for batch in batches:
        states, targets = held_out_states(model, batch)
        cond, _, _ = model.conditions(states, batch.get("actions"))
        values = {f"eval/{k}": v.mean() for k, v in transition_errors(model, states, targets, cond).items()}
        rolled = model.rollout(states[:, :1], cond[:, :horizon])
        errors = (rolled - targets[:, 1 : 1 + horizon]).abs().mean(dim=(0, 2, 3))
        values["eval/rollout_mean"] = errors.mean()
        values.update({f"eval/rollout_h{k + 1}": e for k, e in enumerate(errors)})
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value.double()
        if not model.action_conditioned:
            z = cond.flatten(0, 1).double()
            batch_moments = torch.cat([z.new_tensor([len(z)]), z.sum(0), z.pow(2).sum(0)])
            moments = batch_moments if moments is None else moments + batch_moments
    model.train(was_training)
    keys = list(totals)
    packed = torch.stack([totals[k] for k in keys] + [torch.tensor(float(len(batches)), dtype=torch.float64,
                                                                     device=totals[keys[0]].device)])
    if moments is not None:
        packed = torch.cat([packed, moments.to(packed.device)])
    if all_reduce is not None:
        packed = all_reduce(packed)
    count = packed[len(keys)].item()
    results = {key: packed[i].item() / count for i, key in enumerate(keys)}
    results["eval/ratio"] = _ratio(results["eval/one_step"], results["eval/copy"])
    results["eval/latent_gain"] = _ratio(results["eval/shuffled"], results["eval/one_step"])
    if moments is not None:
        reduced, dims = packed[len(keys) + 1 :], (len(moments) - 1) // 2
        results["latent/spread"] = latent_spread(reduced[0], reduced[1 : 1 + dims], reduced[1 + dims :])
    return results


def latent_spread(count: torch.Tensor, total: torch.Tensor, squares: torch.Tensor) -> float:
    """``latent/spread`` of ``n`` latents ``z [n, C]`` from their moments: ``count = n``, ``total [C] = Σz``,
    ``squares [C] = Σz²``. The per-dimension std over transitions (unbiased), averaged over dimensions,
    divided by (the RMS of z over all entries + 1e-8). NaN for fewer than 2 transitions."""
    n = float(count)
    if n < 2:
        return float("nan")
    variance = ((squares - total.pow(2) / n) / (n - 1)).clamp(min=0)
    rms = (squares.sum() / (n * len(squares))).sqrt()
    return (variance.sqrt().mean() / (rms + 1e-8)).item()


def condition_verdict(metrics: dict[str, Any], condition: str = "latent") -> str:
    """One closing line: held-out one-step / copy ratio, the gain of the own ``condition`` (``latent`` or
    ``action``) over another clip's, and whether the predictor uses it (gain >= :data:`GAIN_USED`)."""
    if "eval/latent_gain" not in metrics:
        return ""
    gain = metrics["eval/latent_gain"]
    verdict = "the condition is used" if gain >= GAIN_USED else "not used yet"
    line = (f"held-out one-step / copy ratio {metrics['eval/ratio']:.3f}; {condition} gain {gain:.3f} (error with "
            f"another clip's {condition}s / with its own): {verdict}")
    if "latent/kl" in metrics:  # the noisy family: how much z says, in nats, at the last logged step
        line += f"; KL {metrics['latent/kl']:.2f} nats per transition"
    return line


@torch.no_grad()
def rollout_picture(model, frames: torch.Tensor, horizon: int, path: str | Path, rows: int = 4,
                    actions: torch.Tensor | None = None) -> Path:
    """PNG (and GIF beside it): true frames vs the nearest true frame to each rollout prediction.

    With no pixel decoder yet, a prediction is shown as the held-out frame whose representation is
    nearest (L2) among all steps of the batch: a correct prediction shows the true next frame.

    Args:
        frames: uint8 ``[B, T, 3, H, W]`` held-out clips.
        actions: ``[B, T, r·A]`` their true actions (an action-conditioned model rolls out with them).
    """
    from PIL import Image, ImageDraw

    was_training = model.training
    model.eval()
    states, targets = held_out_states(model, {"frames": frames})
    latents, _, _ = model.conditions(states, actions)
    rolled = model.rollout(states[:, :1], latents[:, :horizon])  # [B, H, N, D]
    model.train(was_training)
    batch, steps = targets.shape[:2]
    bank = targets.reshape(batch * steps, -1)
    nearest = torch.cdist(rolled.reshape(batch * horizon, -1), bank).argmin(-1).reshape(batch, horizon)
    tubelet = frames.shape[1] // steps
    step_frames = frames[:, ::tubelet].permute(0, 1, 3, 4, 2).cpu().numpy()  # [B, S, H, W, 3], first of each step
    rows = min(rows, batch)
    true = step_frames[:rows, : horizon + 1]
    predicted = true.copy()  # column 0 is the context step
    for r in range(rows):
        for h in range(horizon):
            b, s = divmod(int(nearest[r, h]), steps)
            predicted[r, h + 1] = step_frames[b, s]
    pairs = np.concatenate([true, predicted], axis=2)  # [rows, H+1, 2*size, size, 3]: true above predicted
    size, label = frames.shape[-1], 14
    canvas = Image.new("RGB", ((horizon + 1) * size, label + rows * 2 * size), "white")
    ImageDraw.Draw(canvas).text((2, 1), "true / nearest to prediction", fill="black")
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in pairs], axis=0)  # steps side by side
    canvas.paste(Image.fromarray(grid), (0, label))
    gif_frames = [np.concatenate(pairs[:, h], axis=0) for h in range(horizon + 1)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    import imageio.v2 as imageio

    imageio.mimsave(path.with_suffix(".gif"), gif_frames, duration=0.5, loop=0)
    return path
