"""The latent-action world model: encode -> infer latent actions -> regularize -> predict -> loss.

For a clip of T frames (S = T / k steps):

    s = LN(f(frames))                         [B, S, N, D]   (targets from the EMA encoder in ``ema`` mode;
                                                             no LN in ``e2e`` mode: s = f(frames))
    raw_t = g(s_t, s_t+1)                     [B, S-1, R]
    z_t, L_z = family(raw_t)                  [B, S-1, C]
    ŝ_t+1 = p(s_0..t, z_0..t)                 [B, S-1, N, D]   (teacher forcing, one pass)
    loss = mean |ŝ_t+1 − s_t+1| + L_z  (+ λ · SIGReg(f(frames)) / N in ``e2e`` mode)
           (+ λ_r · mean |s̃_t − s_t| over a rollout s̃ from the first steps, with ``rollout_loss`` > 0)

Encoder modes: ``frozen`` (targets are the features), ``ema`` (targets from a slowly moving copy, no
gradient) and ``e2e`` (LeWM-style: the encoder is trained through both the prediction and its target,
and SIGReg on its raw outputs keeps them spread out; without it they collapse to a constant).

With ``model.condition=action`` the predictor is conditioned on the true actions instead: c_t is the
actions of the frames step t spans, concatenated (``[B, S-1, k·r·A]`` for a tubelet of k frames, frame
stride r and A action entries per frame); there is no IDM and no latent loss.

The L1 term is averaged over steps, tokens and channels (the paper sums over steps; that only rescales
the regularizer coefficients by S − 1). Encoder outputs pass a parameter-free LayerNorm so the loss
scale does not depend on the encoder (in ``e2e`` mode SIGReg sets their scale instead).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lavid.core.config import check
from lavid.data.actions import transition_actions
from lavid.models.encoder import EncoderConfig, FrameEncoder, normalize_frames
from lavid.models.idm import IDMConfig, InverseDynamics
from lavid.models.latents import LatentConfig, make_family
from lavid.models.predictor import Predictor, PredictorConfig


@dataclass
class ModelConfig:
    """Attributes:
        encoder, idm, latent, predictor: the parts (each validates itself when loaded).
        loss: ``l1`` or ``mse`` on the predicted representations.
        condition: what conditions each predicted step: ``latent`` (the IDM's latent action, regularized by
            the latent family) or ``action`` (the true actions of the step's frames; no IDM, no latent
            loss, ``latent`` is ignored).
        action_dim: entries of one frame's action after zero-padding (``condition=action``); 0 is auto:
            lavid/train.py sets it to the largest action size among the training sources before it
            builds the model, and writes the resolved value to the run's ``config.yaml``.
        rollout_loss: weight of a second prediction loss on the model's own autoregressive rollout: from the
            clip's first ``rollout_context`` steps, the predictor imagines every later step from its own
            outputs (with the clip's conditions), as a planner does, and each is compared with its target.
            Teacher forcing alone never trains on the predictor's own errors; 0 turns it off. Measured on reacher
            (1,000 episodes, SIGReg 0.3, weight 1): with its gradient in the encoder it pushed the end-to-end
            encoder back into the static collapse (issue 34 part 3); predictor-only (the default
            ``rollout_encoder``) it does not, but it plans no better (10 % against 8 %, issue 34 part 4), so it
            stays off.
        rollout_context: observed steps the training rollout starts from (the planner's ``context``).
        rollout_encoder: let the rollout loss's gradient reach the encoder (its context and its targets). Off, the
            rollout loss trains the predictor (and the conditions) on its own errors over fixed states, and only
            the one-step loss and SIGReg shape the features: the run above collapsed with it on.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    idm: IDMConfig = field(default_factory=IDMConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    loss: Literal["l1", "mse"] = "l1"
    condition: Literal["latent", "action"] = "latent"
    action_dim: int = 0
    rollout_loss: float = 0.0
    rollout_context: int = 2
    rollout_encoder: bool = False

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.action_dim >= 0, f"{key}action_dim", f"must be >= 0 (0: from the data), got {self.action_dim}")
        check(self.rollout_loss >= 0.0, f"{key}rollout_loss", f"must be >= 0, got {self.rollout_loss}")
        check(self.rollout_context >= 1, f"{key}rollout_context", f"must be >= 1, got {self.rollout_context}")


class LatentActionWorldModel(nn.Module):
    """Encoder f, inverse dynamics g, latent family, predictor p (or f and p, conditioned on true actions).

    ``forward`` takes uint8 frames ``[B, T, 3, H, W]`` or cached features ``[B, S, N, D]`` (frozen
    encoder only), and with ``condition=action`` the per-frame actions ``[B, T, r·A]``; it returns a dict
    with ``loss`` and its terms, plus detached statistics.

    Args:
        config: the model config (``action_dim`` resolved, i.e. >= 1, when ``condition=action``).
        frame_stride: the data's frame stride ``r`` (``data.frame_stride``): each kept frame carries ``r``
            actions, so an action-conditioned step's condition has ``k·r·action_dim`` entries.
    """

    def __init__(self, config: ModelConfig, frame_stride: int = 1) -> None:
        super().__init__()
        self.config = config
        self.frame_stride = frame_stride
        self.encoder = FrameEncoder(config.encoder)
        self.frozen = config.encoder.mode == "frozen"
        self.end_to_end = config.encoder.mode == "e2e"
        norm = config.encoder.state_norm
        self.raw_states = norm == "raw" or (norm == "auto" and self.end_to_end)
        self.target_encoder = None
        if self.frozen:
            self.encoder.requires_grad_(False)
        elif config.encoder.mode == "ema":
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        tokens, dim = self.encoder.num_tokens, self.encoder.dim
        self.action_conditioned = config.condition == "action"
        if self.action_conditioned:
            if config.action_dim < 1:
                raise ValueError("model.condition=action needs model.action_dim >= 1 to build the model (0 means "
                                 "'from the data': lavid/train.py resolves it before building)")
            self.family, self.idm = None, None
            self.cond_dim = config.encoder.tubelet * frame_stride * config.action_dim
        else:
            self.family = make_family(config.latent)
            self.idm = InverseDynamics(config.idm, dim, tokens, self.family.raw_dim) if self.family.uses_idm else None
            self.cond_dim = self.family.dim
        self.predictor = Predictor(config.predictor, dim, tokens, cond_dim=self.cond_dim)
        self.train()  # a frozen encoder (and the EMA target) run in eval mode from the start (BatchNorm)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        if self.target_encoder is not None:
            self.target_encoder.eval()
        return self

    # ------------------------------------------------------------------ pieces

    def encode(self, frames: torch.Tensor, target: bool = False) -> torch.Tensor:
        """uint8 ``[B, T, 3, H, W]`` -> step tokens ``[B, S, N, D]`` (layer-normed unless ``e2e``)."""
        return self._encode(frames, target)[0]

    def _encode(self, frames: torch.Tensor, target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states, raw encoder tokens)``, both ``[B, S, N, D]``: states are layer-normed, except in ``e2e``
        mode, where SIGReg holds the raw tokens near N(0, I) and sets their scale (as in LeWM), or when
        ``encoder.state_norm=raw``. Measured on the default data, the raw states did better than layer-normed
        ones (held-out one-step ÷ copy 0.47 vs 0.76 for the default latent model; BENCHMARKS.md)."""
        encoder = self.target_encoder if (target and self.target_encoder is not None) else self.encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen and not target):
            tokens = encoder(normalize_frames(frames))
        return self.states_of(tokens), tokens

    def states_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (or cached features) ``[B, S, N, D]`` -> the states the predictor works on, same shape."""
        return tokens if self.raw_states else F.layer_norm(tokens, tokens.shape[-1:])

    def spread_loss(self, raw: torch.Tensor) -> torch.Tensor:
        """λ · SIGReg of raw encoder tokens ``[B, S, N, D]``, divided by N so that it is scaled per frame, plus
        λ_change · SIGReg of their within-clip changes ``raw[:, 1:] − raw[:, :-1]`` when ``sigreg_change > 0``.

        With several processes the statistic is taken over every process's tokens (gathered with their
        gradients), so it does not depend on how the global batch is split. The random directions come
        from the global torch RNG, which ``set_seed`` makes the same on every process (and checkpoints save).
        """
        config = self.config.encoder
        loss = raw.new_zeros(())
        if config.sigreg > 0:
            loss = loss + config.sigreg * _gathered_sigreg(raw.flatten(0, 2), config.sigreg_directions)
        if config.sigreg_change > 0 and raw.shape[1] > 1:
            changes = (raw[:, 1:] - raw[:, :-1]).flatten(0, 2)
            loss = loss + config.sigreg_change * _gathered_sigreg(changes, config.sigreg_directions)
        return loss / raw.shape[2]

    def infer_latents(self, states: torch.Tensor, generator: torch.Generator | None = None):
        """``[B, S, N, D]`` -> ``(z [B, S-1, C], L_z, stats)`` for every transition."""
        if self.action_conditioned:
            raise ValueError("this model is conditioned on true actions (model.condition=action): it has no "
                             "latent actions to infer")
        if self.idm is None:
            raw = states.new_zeros(states.shape[0], states.shape[1] - 1, 1)
        else:
            raw = self.idm(states[:, :-1], states[:, 1:])
        return self.family(raw, generator=generator)

    def conditions(self, states: torch.Tensor, actions: torch.Tensor | None = None,
                   generator: torch.Generator | None = None):
        """The condition of every transition: ``(c [B, S-1, C], L_c, stats)``.

        ``condition=latent``: the IDM's latents (:meth:`infer_latents`; ``actions`` is ignored).
        ``condition=action``: ``actions [B, T, r·A]`` per kept frame (``T >= S·k``) grouped by step, the
        actions of step ``t`` causing ``t -> t+1`` (:func:`lavid.data.actions.transition_actions`); no loss.
        """
        if not self.action_conditioned:
            return self.infer_latents(states, generator)
        if actions is None:
            raise ValueError("model.condition=action: pass the true actions, model(frames=..., actions=[B, T, A]) "
                             "or model(features=..., actions=...)")
        tubelet, steps = self.config.encoder.tubelet, states.shape[1]
        if actions.shape[1] < steps * tubelet or actions.shape[-1] * tubelet != self.cond_dim:
            raise ValueError(f"actions {tuple(actions.shape)} do not fit {steps} steps of {tubelet} frame(s) with "
                             f"{self.cond_dim // tubelet} entries per frame (frame stride {self.frame_stride} × "
                             f"model.action_dim={self.config.action_dim})")
        cond = transition_actions(actions[:, : steps * tubelet].to(states.dtype), tubelet)
        return cond, states.new_zeros(()), {}

    def predict(self, states: torch.Tensor, latents: torch.Tensor, cache=None) -> torch.Tensor:
        """Teacher-forced: states ``[B, S-1, N, D]``, latents ``[B, S-1, C]`` -> ``[B, S-1, N, D]``. With a
        :class:`lavid.models.predictor.KVCache`, the states follow the cached ones (one step at a time)."""
        return self.predictor(states, latents, cache)

    def rollout(self, context: torch.Tensor, latents: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        return self.predictor.rollout(context, latents, use_cache)

    # ------------------------------------------------------------------ training

    def forward(self, frames: torch.Tensor | None = None, features: torch.Tensor | None = None,
                actions: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, Any]:
        """One training step's loss. ``copy_baseline`` is the target-vs-target error of predicting no change."""
        spread = None
        if features is not None:
            if not self.frozen:
                raise ValueError("cached features need a frozen encoder (encoder.mode=frozen)")
            states = targets = self.states_of(features.float())
        elif frames is not None:
            if self.training and self.config.encoder.random_shift:
                from lavid.data.augment import random_shift

                frames = random_shift(frames, self.config.encoder.random_shift, generator)
            states, raw = self._encode(frames)
            if self.end_to_end:  # the target is trained too (no stop-gradient): SIGReg keeps it from collapsing
                targets = states
                regularized = self.config.encoder.sigreg > 0 or self.config.encoder.sigreg_change > 0
                spread = self.spread_loss(raw) if regularized else None
            else:
                targets = self.encode(frames, target=True) if self.target_encoder is not None else states.detach()
        else:
            raise ValueError("forward needs frames or features")
        if states.shape[1] < 2:
            raise ValueError(f"a clip must give at least 2 steps, got {states.shape[1]}")
        latents, latent_loss, stats = self.conditions(states, actions, generator)
        predictions = self.predict(states[:, :-1], latents)
        if not self.end_to_end:
            targets = targets.detach()  # only e2e trains the encoder through its targets
        error = predictions - targets[:, 1:]
        prediction_loss = self._distance(error)
        extra, rollout_term = {}, 0.0
        context = self.config.rollout_context
        if self.config.rollout_loss > 0 and states.shape[1] > context + 1:
            start, goal = states[:, :context], targets[:, context:]
            if not self.config.rollout_encoder:  # the predictor learns from its own errors; the features stay put
                start, goal = start.detach(), goal.detach()
            imagined = self.predictor.imagine(start, latents)  # steps context .. S-1
            rollout_loss = self._distance(imagined - goal)
            rollout_term = self.config.rollout_loss * rollout_loss
            extra["rollout_loss"] = rollout_loss.detach()
        with torch.no_grad():  # both sides from the target encoder: online states would flatter it in EMA mode
            copy_error = (targets[:, :-1] - targets[:, 1:]).abs().mean()
        loss = prediction_loss + latent_loss + rollout_term
        if spread is not None:
            loss = loss + spread
            extra["sigreg"] = spread.detach()
        return {
            "loss": loss,
            **extra,
            "prediction_loss": prediction_loss.detach(),
            "prediction_l1": error.detach().abs().mean(),
            "latent_loss": latent_loss.detach(),
            "copy_baseline": copy_error,
            **{f"latent/{k}": v for k, v in stats.items()},
        }

    def _distance(self, error: torch.Tensor) -> torch.Tensor:
        """The training loss of a prediction error: its mean absolute (``l1``) or squared (``mse``) entry."""
        return error.abs().mean() if self.config.loss == "l1" else error.pow(2).mean()

    def set_progress(self, fraction: float) -> None:
        """The share of training done, ``[0, 1]``, for the latent family's schedules (the KL warm-up)."""
        if self.family is not None:
            self.family.set_progress(fraction)

    @torch.no_grad()
    def update_ema(self, momentum: float | None = None) -> None:
        """Move the target encoder toward the online one (call after each optimizer step)."""
        if self.target_encoder is None:
            return
        m = self.config.encoder.ema_momentum if momentum is None else momentum
        for target, online in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            target.lerp_(online.detach(), 1.0 - m)

    def parameter_count(self) -> dict[str, int]:
        def count(module):
            return sum(p.numel() for p in module.parameters()) if module is not None else 0

        return {"encoder": count(self.encoder), "idm": count(self.idm), "latent": count(self.family),
                "predictor": count(self.predictor)}


def _gathered_sigreg(tokens: torch.Tensor, directions: int) -> torch.Tensor:
    """SIGReg of ``[M, D]`` tokens, over every process's tokens when several run (gathered with gradients)."""
    from lavid.models.sigreg import sigreg

    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        from torch.distributed.nn.functional import all_gather

        tokens = torch.cat(all_gather(tokens))
    return sigreg(tokens, directions)
