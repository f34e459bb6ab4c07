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

- ``sequence``: the whole planned sequence at once, from the two *observed* states only:
  ``(s_t−1, s_t, a_t … a_t+H−1) -> (z_t … z_t+H−1)``, each z_k from the actions up to a_k: the action
  embeddings pass causal self-attention layers, then each reads the state tokens as ``attention``'s does. The
  other variants read each imagined step's state, which inside a plan is the world model's own prediction,
  off the distribution of real frames they were trained on, so their errors compound (BENCHMARKS.md,
  issue 34 part 11: the controller's rollouts on its own imagined states are the latent row's gap). This
  one never reads an imagined state: where the joints go under the actions is for it to infer, as the
  world model does, from the real frames it starts from.

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
        variant: ``mlp`` (actions only), ``attention`` (actions and the state they act in) or ``sequence``
            (a sequence of actions from the two observed states it starts from).
        dim: width of the action embedding and of the attention.
        depth: hidden layers of the ``mlp`` variant / self-attention blocks over the state tokens (and, for
            ``sequence``, as many causal self-attention layers over the action tokens).
        num_heads: attention heads (``attention`` and ``sequence``).
        previous_action: also embed the action taken before (``a_t−1``; not with ``sequence``).
        horizon: ``sequence`` only: the most actions one call maps (a plan's horizon and the held-out
            windows' length must fit).
        dropout: dropout in the attention variants' blocks while training (the state blocks' and the action
            layers' projections, the cross-attention's weights): a regularizer for a controller fit on few labels.
    """

    variant: Literal["mlp", "attention", "sequence"] = "attention"
    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    previous_action: bool = False
    horizon: int = 8
    dropout: float = 0.0

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.variant in ("mlp", "attention", "sequence"), f"{key}variant",
              f"must be mlp, attention or sequence, got {self.variant!r}")
        check(self.horizon >= 1, f"{key}horizon", f"must be >= 1, got {self.horizon}")
        check(not (self.variant == "sequence" and self.previous_action), f"{key}previous_action",
              "the sequence controller sees every action of its sequence already; it takes no previous action")
        check(self.dim >= 1, f"{key}dim", f"must be >= 1, got {self.dim}")
        check(0 <= self.dropout < 1, f"{key}dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.depth >= 1, f"{key}depth", f"must be >= 1, got {self.depth}")
        check(self.num_heads >= 1 and self.dim % self.num_heads == 0, f"{key}num_heads",
              f"must divide dim {self.dim}, got {self.num_heads}")


class Controller(nn.Module):
    """``actions [B, A]`` (``A <= action_dim``), ``states [B, 2, N, D]`` (``s_t−1, s_t``) and, with
    ``config.previous_action``, ``previous [B, A]`` (``a_t−1``) -> latents ``[B, C]``; the ``sequence``
    variant: ``actions [B, H, A]`` (``H <= config.horizon``) and ``states [B, 2, N, D]`` -> latents ``[B, H, C]``.

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
            self.state_blocks = nn.ModuleList(Block(config.dim, config.num_heads, qkv_bias=True,
                                                    proj_drop=config.dropout) for _ in range(config.depth))
            self.query_norm = nn.LayerNorm(config.dim)
            self.key_norm = nn.LayerNorm(config.dim)
            self.cross = nn.MultiheadAttention(config.dim, config.num_heads, dropout=config.dropout, batch_first=True)
            self.mix = MLP(2 * config.dim, config.dim, config.dim)
            if config.variant == "sequence":  # the action tokens first attend causally to the earlier actions
                self.step = nn.Parameter(torch.zeros(1, config.horizon, config.dim))
                nn.init.trunc_normal_(self.step, std=0.02)
                layer = nn.TransformerEncoderLayer(config.dim, config.num_heads, 4 * config.dim, dropout=config.dropout,
                                                   activation="gelu", batch_first=True, norm_first=True)
                self.sequence_blocks = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
                self.register_buffer("causal", torch.ones(config.horizon, config.horizon, dtype=torch.bool).triu(1),
                                     persistent=False)  # True: step j is after step i, hidden from it
        self.head = nn.Linear(config.dim, latent_dim)

    @property
    def uses_state(self) -> bool:
        return self.config.variant != "mlp"

    @property
    def sequential(self) -> bool:
        """Maps a whole action sequence from the observed states (``sequence``), not one step at a time."""
        return self.config.variant == "sequence"

    def forward(self, actions: torch.Tensor, states: torch.Tensor | None = None,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        if self.sequential and (actions.dim() != 3 or actions.shape[1] > self.config.horizon):
            raise ValueError(f"the sequence controller maps actions [B, H <= {self.config.horizon}, A], got "
                             f"{tuple(actions.shape)} (a longer plan needs controller.horizon >= its horizon)")
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
            raise ValueError(f"the {self.config.variant} controller needs states [B, 2, {self.num_tokens}, "
                             f"{self.state_dim}] (s_t-1, s_t), got {shape}")
        tokens = (self.state_in(states) + self.position).flatten(1, 2)
        for block in self.state_blocks:
            tokens = block(tokens)
        if self.sequential:
            steps = action.shape[1]
            action = self.sequence_blocks(action + self.step[:, :steps], mask=self.causal[:steps, :steps],
                                          is_causal=True)
        else:
            action = action[:, None]
        keys = self.key_norm(tokens)
        read, _ = self.cross(self.query_norm(action), keys, keys, need_weights=False)
        latents = self.head(self.mix(torch.cat([action, read], dim=-1)) + action)
        return latents if self.sequential else latents[:, 0]
