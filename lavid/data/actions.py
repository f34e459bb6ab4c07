"""Real actions as model inputs: padding, grouping by frame stride and by tubelet.

Conventions (frame ``t``'s action is applied after frame ``t`` is observed):

- a dataset stores one action per stored frame, ``[T_stored, A_task]`` (tasks of a mix may differ in
  ``A_task``); :func:`pad_actions` zero-pads them to a common ``A``;
- with a frame stride ``r``, kept frame ``t`` is stored frame ``r·t`` and carries the ``r`` actions from it
  up to the next kept frame, concatenated (:func:`stride_actions`): ``[T, r·A]``;
- with a tubelet of ``k`` frames, step ``s`` spans ``k`` kept frames, so its condition is their actions
  concatenated (:func:`step_actions`): ``[S, k·r·A]``; the transition ``s -> s + 1`` is caused by the
  actions of step ``s`` (:func:`transition_actions`).

``lavid.metrics.probe.transition_actions`` is the same function as :func:`transition_actions` here and could
import it from this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def pad_actions(actions: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pad the last dimension of ``actions [..., A]`` to ``[..., dim]`` (``A <= dim``)."""
    size = actions.shape[-1]
    if size > dim:
        raise ValueError(f"actions have {size} entries per frame, more than the {dim} they are padded to")
    return F.pad(actions, (0, dim - size)) if size < dim else actions


def stride_actions(actions: torch.Tensor, stride: int) -> torch.Tensor:
    """Stored per-frame actions ``[..., T·r, A]`` -> per kept frame ``[..., T, r·A]`` (``r = stride``).

    Kept frame ``t`` (stored frame ``r·t``) gets the actions of stored frames ``r·t .. r·t + r − 1``, in order.
    """
    if stride < 1:
        raise ValueError(f"frame stride must be >= 1, got {stride}")
    frames = actions.shape[-2] // stride
    return rearrange(actions[..., : frames * stride, :], "... (t r) a -> ... t (r a)", r=stride)


def step_actions(actions: torch.Tensor, tubelet: int) -> torch.Tensor:
    """Per-frame actions ``[B, T, A]`` -> the actions of each step ``[B, T/k, k·A]`` (``k = tubelet``)."""
    steps = actions.shape[1] // tubelet
    return rearrange(actions[:, : steps * tubelet], "b (s k) a -> b s (k a)", k=tubelet)


def transition_actions(actions: torch.Tensor, tubelet: int) -> torch.Tensor:
    """Per-frame actions ``[B, T, A]`` -> the actions of each step transition ``[B, T/k - 1, k·A]``.

    The transition from step ``s`` to ``s + 1`` is caused by the actions of step ``s``'s ``k`` frames.
    """
    return step_actions(actions, tubelet)[:, :-1]
