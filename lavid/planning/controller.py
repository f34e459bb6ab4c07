"""The controller c(a_t, s_t) -> z_t: real actions into the latent-action space of a trained world model.

A latent world model is conditioned on z_t = g(s_t, s_t+1), the IDM's latent for the transition that
action a_t caused. To plan with real actions through it, a small network learns to say which z an
action gives in a state, with L2 against the frozen IDM's latents on the few transitions that have
action labels (the reference paper's controller; docs/reference.md, "Evaluations"). Two variants:

- ``mlp``: the action alone, ``MLP(a_t)``: enough where an action means the same change in every state;
- ``attention``: also the state the action is taken in and the one before it (``s_t−1, s_t``: a
  latent that carries the frame change depends on the velocity, which one state does not show). The
  two states' tokens pass small self-attention blocks, an MLP embeds the action, the action embedding
  reads the state tokens by cross-attention, and a linear head gives z. Measured on the default run,
  the action alone cannot predict its latents (held-out R² < 0; BENCHMARKS.md).

``previous_action`` adds the action taken before, ``a_t−1`` (zeros where none is known: an episode's
first step, a plan's first imagined step without executed actions), to the action's embedding: two
frames 0.2 s apart show the mean velocity over the last step, and the torque held over it says what
the velocity is at its end, which the IDM's latent of ``s_t -> s_t+1`` carries.

Actions are zero-padded to the world model's action size (``pad_to``), so one controller serves every
task of a mixed dataset (the state tells the task apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lavid.core.config import check
from lavid.data.actions import pad_actions
from lavid.models.layers import MLP


@dataclass
class ControllerConfig:
    """Attributes:
        variant: ``mlp`` (actions only) or ``attention`` (actions and the state they act in).
        dim: width of the action embedding and of the attention.
        depth: hidden layers of the ``mlp`` variant / self-attention blocks over the state tokens.
        num_heads: attention heads (``attention`` only).
        previous_action: also embed the action taken before (``a_t−1``).
    """

    variant: Literal["mlp", "attention"] = "attention"
    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    previous_action: bool = False

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.variant in ("mlp", "attention"), f"{key}variant", f"must be mlp or attention, got {self.variant!r}")
        check(self.dim >= 1, f"{key}dim", f"must be >= 1, got {self.dim}")
        check(self.depth >= 1, f"{key}depth", f"must be >= 1, got {self.depth}")
        check(self.num_heads >= 1 and self.dim % self.num_heads == 0, f"{key}num_heads",
              f"must divide dim {self.dim}, got {self.num_heads}")


class Controller(nn.Module):
    """``actions [B, A]`` (``A <= action_dim``), ``states [B, 2, N, D]`` (``s_t−1, s_t``) and, with
    ``config.previous_action``, ``previous [B, A]`` (``a_t−1``) -> latents ``[B, C]``.

    At the first step of an episode, pass ``s_t`` twice (no motion seen yet) and no previous action (zeros).

    Args:
        config: the variant and sizes.
        action_dim: the action entries the world model's data used (shorter actions are zero-padded).
        state_dim, num_tokens: the world model's state tokens ``[N, D]``.
        latent_dim: the size ``C`` of the world model's latent action.
    """

    def __init__(self, config: ControllerConfig, action_dim: int, state_dim: int, num_tokens: int,
                 latent_dim: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        config.validate("controller")
        self.config, self.action_dim, self.num_tokens, self.state_dim = config, action_dim, num_tokens, state_dim
        self.latent_dim = latent_dim
        inputs = 2 * action_dim if config.previous_action else action_dim
        if config.variant == "mlp":
            layers: list[nn.Module] = [nn.Linear(inputs, config.dim), nn.GELU()]
            for _ in range(config.depth - 1):
                layers += [nn.Linear(config.dim, config.dim), nn.GELU()]
            self.action_embed = nn.Sequential(*layers)
        else:
            self.action_embed = MLP(inputs, config.dim, config.dim)
            self.state_in = nn.Linear(state_dim, config.dim)
            self.position = nn.Parameter(torch.zeros(1, 2, num_tokens, config.dim))
            nn.init.trunc_normal_(self.position, std=0.02)
            self.state_blocks = nn.ModuleList(Block(config.dim, config.num_heads, qkv_bias=True)
                                              for _ in range(config.depth))
            self.query_norm = nn.LayerNorm(config.dim)
            self.key_norm = nn.LayerNorm(config.dim)
            self.cross = nn.MultiheadAttention(config.dim, config.num_heads, batch_first=True)
            self.mix = MLP(2 * config.dim, config.dim, config.dim)
        self.head = nn.Linear(config.dim, latent_dim)

    @property
    def uses_state(self) -> bool:
        return self.config.variant == "attention"

    def forward(self, actions: torch.Tensor, states: torch.Tensor | None = None,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        if actions.shape[-1] > self.action_dim:
            raise ValueError(f"actions have {actions.shape[-1]} entries, the controller was built for at most "
                             f"{self.action_dim} (the world model's action size)")
        action = pad_actions(actions.to(self.head.weight.dtype), self.action_dim)
        if self.config.previous_action:
            if previous is None:
                before = torch.zeros_like(action)
            elif previous.shape[:-1] != actions.shape[:-1] or previous.shape[-1] > self.action_dim:
                raise ValueError(f"previous actions {tuple(previous.shape)} do not match the actions "
                                 f"{tuple(actions.shape)}")
            else:
                before = pad_actions(previous.to(action.dtype), self.action_dim)
            action = torch.cat([action, before], dim=-1)
        action = self.action_embed(action)
        if not self.uses_state:
            return self.head(action)
        if states is None or tuple(states.shape[-3:]) != (2, self.num_tokens, self.state_dim):
            shape = None if states is None else tuple(states.shape)
            raise ValueError(f"the attention controller needs states [B, 2, {self.num_tokens}, {self.state_dim}] "
                             f"(s_t-1, s_t), got {shape}")
        tokens = (self.state_in(states) + self.position).flatten(1, 2)
        for block in self.state_blocks:
            tokens = block(tokens)
        keys = self.key_norm(tokens)
        read, _ = self.cross(self.query_norm(action)[:, None], keys, keys, need_weights=False)
        return self.head(self.mix(torch.cat([action, read[:, 0]], dim=-1)) + action)
