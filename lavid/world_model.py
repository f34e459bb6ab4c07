"""The latent-action world model: encode -> infer latent actions -> regularize -> predict -> loss.

For a clip of T frames (S = T / k steps):

    s = LN(f(frames))                         [B, S, N, D]   (targets from the EMA encoder if finetuned)
    raw_t = g(s_t, s_t+1)                     [B, S-1, R]
    z_t, L_z = family(raw_t)                  [B, S-1, C]
    ŝ_t+1 = p(s_0..t, z_0..t)                 [B, S-1, N, D]   (teacher forcing, one pass)
    loss = mean |ŝ_t+1 − s_t+1| + L_z

The L1 term is averaged over steps, tokens and channels (the paper sums over steps; that only rescales
the regularizer coefficients by S − 1). Encoder outputs pass a parameter-free LayerNorm so the loss
scale does not depend on the encoder.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lavid.encoder import EncoderConfig, FrameEncoder, normalize_frames
from lavid.idm import IDMConfig, InverseDynamics
from lavid.latents import LatentConfig, make_family
from lavid.predictor import Predictor, PredictorConfig


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    idm: IDMConfig = field(default_factory=IDMConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    loss: Literal["l1", "mse"] = "l1"

    def validate(self, prefix: str = "") -> None:  # each part validated itself when loaded
        pass


class LatentActionWorldModel(nn.Module):
    """Encoder f, inverse dynamics g, latent family, predictor p.

    ``forward`` takes uint8 frames ``[B, T, 3, H, W]`` or cached features ``[B, S, N, D]`` (frozen
    encoder only) and returns a dict with ``loss`` and its terms, plus detached statistics.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = FrameEncoder(config.encoder)
        self.frozen = config.encoder.mode == "frozen"
        if self.frozen:
            self.encoder.requires_grad_(False)
            self.target_encoder = None
        else:
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.family = make_family(config.latent)
        tokens, dim = self.encoder.num_tokens, self.encoder.dim
        self.idm = InverseDynamics(config.idm, dim, tokens, self.family.raw_dim) if self.family.uses_idm else None
        self.predictor = Predictor(config.predictor, dim, tokens, cond_dim=self.family.dim)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        if self.target_encoder is not None:
            self.target_encoder.eval()
        return self

    # ------------------------------------------------------------------ pieces

    def encode(self, frames: torch.Tensor, target: bool = False) -> torch.Tensor:
        """uint8 ``[B, T, 3, H, W]`` -> layer-normed step tokens ``[B, S, N, D]``."""
        encoder = self.target_encoder if (target and self.target_encoder is not None) else self.encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen and not target):
            tokens = encoder(normalize_frames(frames))
        return F.layer_norm(tokens, tokens.shape[-1:])

    def infer_latents(self, states: torch.Tensor, generator: torch.Generator | None = None):
        """``[B, S, N, D]`` -> ``(z [B, S-1, C], L_z, stats)`` for every transition."""
        if self.idm is None:
            raw = states.new_zeros(states.shape[0], states.shape[1] - 1, 1)
        else:
            raw = self.idm(states[:, :-1], states[:, 1:])
        return self.family(raw, generator=generator)

    def predict(self, states: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: states ``[B, S-1, N, D]``, latents ``[B, S-1, C]`` -> ``[B, S-1, N, D]``."""
        return self.predictor(states, latents)

    def rollout(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return self.predictor.rollout(context, latents)

    # ------------------------------------------------------------------ training

    def forward(self, frames: torch.Tensor | None = None, features: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Any]:
        if features is not None:
            if not self.frozen:
                raise ValueError("cached features need a frozen encoder (encoder.mode=frozen)")
            states = targets = F.layer_norm(features.float(), features.shape[-1:])
        elif frames is not None:
            states = self.encode(frames)
            targets = self.encode(frames, target=True) if self.target_encoder is not None else states.detach()
        else:
            raise ValueError("forward needs frames or features")
        if states.shape[1] < 2:
            raise ValueError(f"a clip must give at least 2 steps, got {states.shape[1]}")
        latents, latent_loss, stats = self.infer_latents(states, generator)
        predictions = self.predict(states[:, :-1], latents)
        error = predictions - targets[:, 1:].detach()
        prediction_loss = error.abs().mean() if self.config.loss == "l1" else error.pow(2).mean()
        with torch.no_grad():
            copy_error = (states[:, :-1] - targets[:, 1:]).abs().mean()
        return {
            "loss": prediction_loss + latent_loss,
            "prediction_loss": prediction_loss.detach(),
            "prediction_l1": error.detach().abs().mean(),
            "latent_loss": latent_loss.detach(),
            "copy_baseline": copy_error,
            **{f"latent/{k}": v for k, v in stats.items()},
        }

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
