"""A trained world model as dynamics over real actions: encode frames, then imagine where actions lead.

For an action-conditioned run (``model.condition=action``) the actions are the predictor's condition
directly. For a latent-action run the controller turns each action into the latent z it stands for, in
the state it is taken in: inside an imagined rollout that state is the model's own prediction (the
``sequence`` controller maps the whole sequence from the last two observed states instead). The
transitions already observed are conditioned as in training: on the IDM's latents of the real frames
(latent run) or on the executed actions (action run).

Shapes: ``B`` rollouts, ``S`` observed steps, ``H`` imagined steps, ``N`` tokens of ``D`` channels a step,
``A`` action entries, ``C`` condition entries.
"""

from __future__ import annotations

import torch

from lavid.planning.controller import Controller
from lavid.data.actions import pad_actions
from lavid.models.world_model import LatentActionWorldModel


def pairs(states: torch.Tensor) -> torch.Tensor:
    """``[B, S, N, D]`` -> ``[B, S, 2, N, D]``: each step with the one before it (the first with itself)."""
    previous = torch.cat([states[:, :1], states[:, :-1]], dim=1)
    return torch.stack([previous, states], dim=2)


class ActionDynamics:
    """Args:
        model: a trained world model in eval mode.
        controller: for a latent-action model, the controller into its latent space; ``None`` for an
            action-conditioned model.
        action_dim: the entries of a real action the task has (``<=`` the model's or controller's).
    """

    def __init__(self, model: LatentActionWorldModel, controller: Controller | None, action_dim: int,
                 use_cache: bool = True, precision: str = "float32") -> None:
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be float32 or bfloat16, got {precision!r}")
        if model.config.encoder.tubelet != 1 or model.frame_stride != 1:
            raise ValueError("planning needs a model with one frame a step (model.encoder.tubelet=1, "
                             "data.frame_stride=1)")
        if model.action_conditioned:
            if controller is not None:
                raise ValueError("an action-conditioned world model takes real actions: no controller")
            limit, what = model.config.action_dim, "the action-conditioned world model was trained on"
        else:
            if controller is None:
                raise ValueError("a latent-action world model needs a controller to plan with real actions")
            if controller.latent_dim != model.cond_dim:
                raise ValueError(f"the controller gives {controller.latent_dim}-d latents, the world model takes "
                                 f"{model.cond_dim}")
            limit, what = controller.action_dim, "the controller was trained on"
        if action_dim > limit:
            raise ValueError(f"the task's actions have {action_dim} entries, {what} {limit}: a world model of "
                             "another embodiment?")
        self.model, self.controller, self.action_dim = model, controller, action_dim
        self.max_steps = model.predictor.config.max_steps
        self.use_cache = use_cache  # imagine one step per predictor call over cached keys / values
        self.precision = precision  # bfloat16: imagination under autocast (the encoder and the cost stay float32)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[B, S, 3, H, W]`` -> states ``[B, S, N, D]``."""
        return self.model.encode(frames)

    @torch.no_grad()
    def observed_conditions(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The conditions of observed transitions: states ``[B, S, N, D]``, executed actions
        ``[B, S-1, A]`` -> ``[B, S-1, C]`` (the IDM's latents, or the padded actions)."""
        if self.model.action_conditioned:
            return pad_actions(actions.to(states.dtype), self.model.config.action_dim)
        latents, _, _ = self.model.infer_latents(states)
        return latents

    @torch.no_grad()
    def imagine(self, context: torch.Tensor, past: torch.Tensor, actions: torch.Tensor,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        """Roll out ``H`` steps: ``context [B, S, N, D]``, ``past [B, S-1, C]``, ``actions [B, H, A]`` ->
        predicted states ``[B, H, N, D]`` (float32 whatever the precision). ``previous [B, A]``: the action
        executed into the last context state, for a controller that sees it (``None``: none known)."""
        if self.precision == "float32":
            return self._imagine(context, past, actions, previous)
        with torch.autocast(context.device.type, dtype=torch.bfloat16):
            return self._imagine(context, past, actions, previous).float()

    def _imagine(self, context: torch.Tensor, past: torch.Tensor, actions: torch.Tensor,
                 previous: torch.Tensor | None) -> torch.Tensor:
        if self.model.action_conditioned:
            future = pad_actions(actions.to(context.dtype), self.model.config.action_dim)
            return self.model.rollout(context, torch.cat([past, future], dim=1), self.use_cache)
        if self.controller.sequential:  # every latent from the observed states, none from an imagined one
            latents = self.controller(actions, pairs(context[:, -2:])[:, -1])
            return self.model.rollout(context, torch.cat([past, latents.to(past.dtype)], dim=1), self.use_cache)
        if self.use_cache and context.shape[1] + actions.shape[1] - 1 <= self.max_steps:
            from lavid.models.predictor import KVCache

            before = context[:, -2:-1] if context.shape[1] >= 2 else context[:, -1:]  # the first step: itself
            cache, inputs, conditions, predictions = KVCache(), context, past, []
            for h in range(actions.shape[1]):
                last = inputs[:, -1:]
                latent = self.controller(actions[:, h], torch.stack([before, last], dim=2)[:, 0],
                                         previous if h == 0 else actions[:, h - 1])[:, None]
                conditions = torch.cat([conditions, latent], dim=1)
                following = self.model.predict(inputs, conditions[:, cache.steps:], cache)[:, -1:]
                predictions.append(following)
                before, inputs = last, following
            return torch.cat(predictions, dim=1)
        states, conditions, predictions = context, past, []
        for h in range(actions.shape[1]):
            latent = self.controller(actions[:, h], pairs(states[:, -2:])[:, -1],
                                     previous if h == 0 else actions[:, h - 1])[:, None]
            conditions = torch.cat([conditions, latent], dim=1)
            steps = states.shape[1]
            window = max(0, steps - self.max_steps)
            following = self.model.predict(states[:, window:], conditions[:, window:])[:, -1:]
            predictions.append(following)
            states = torch.cat([states, following], dim=1)
        return torch.cat(predictions, dim=1)
