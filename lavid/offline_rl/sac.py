"""Soft actor-critic on a simulator's proprioceptive state: the agent that makes datasets of known quality.

Offline RL needs behaviour data whose quality is known (random, medium, expert, the replay of an agent
learning). This module trains a state-based SAC agent (Haarnoja et al. 2018: twin Q critics with a Polyak
target, a tanh-squashed Gaussian actor, a learned temperature aiming at entropy ``-action_dim``) and
exports its deterministic actor as the TorchScript policy that ``data_prep/dmc.py --policy checkpoint:PATH``
rolls out to render pixel datasets (``data_prep/train_expert.py``).

Shapes: ``S`` state size, ``A`` action size, ``B`` batch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from lavid.core.config import check

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    """Hyper-parameters of :class:`SAC` (the usual state-based DMControl values)."""

    hidden: int = 256
    lr: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    init_temperature: float = 0.1
    seed_steps: int = 2_000  # uniform random actions before the first update

    def validate(self) -> None:
        for name in ("hidden", "batch_size"):
            check(getattr(self, name) >= 1, f"sac.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "init_temperature"):
            check(getattr(self, name) > 0, f"sac.{name}", f"must be > 0, got {getattr(self, name)}")
        check(0 < self.gamma < 1, "sac.gamma", f"must be in (0, 1), got {self.gamma}")
        check(0 < self.tau <= 1, "sac.tau", f"must be in (0, 1], got {self.tau}")
        check(self.seed_steps >= 0, "sac.seed_steps", f"must be >= 0, got {self.seed_steps}")


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


class Actor(nn.Module):
    """``state [B, S] -> (mean [B, A], log_std [B, A])`` of a Gaussian squashed by tanh into [-1, 1]."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp(state_dim, hidden, 2 * action_dim)

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(state).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, state: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised squashed sample ``[B, A]`` in [-1, 1] and its log-probability ``[B]``."""
        mean, log_std = self(state)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        pre = mean + std * noise
        action = torch.tanh(pre)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre - F.softplus(-2 * pre))).sum(-1)  # tanh's Jacobian
        return action, log_prob


class Critic(nn.Module):
    """Twin Q functions: ``(state [B, S], action [B, A]) -> (q1 [B], q2 [B])``."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int) -> None:
        super().__init__()
        self.q1 = mlp(state_dim + action_dim, hidden, 1)
        self.q2 = mlp(state_dim + action_dim, hidden, 1)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([state, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class DeterministicPolicy(nn.Module):
    """What a dataset is rolled out with: ``state [S] -> action [A]``, the actor's squashed mean mapped to the
    task's bounds ``[low, high]`` (TorchScript, read by :class:`lavid.data.policies.CheckpointPolicy`)."""

    def __init__(self, actor: Actor, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.actor = actor
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        mean, _ = self.actor(state)
        return self.low + (torch.tanh(mean) + 1) * 0.5 * (self.high - self.low)


class ReplayBuffer:
    """Transitions of whole episodes in order, with the physics state of every step (to re-render them).

    Arrays: ``state [N, S]``, ``action [N, A]`` (in [-1, 1]), ``reward [N]``, ``next_state [N, S]``,
    ``physics [N, P]`` (the state the action was taken in), ``episode [N]`` and ``step [N]``.
    """

    FIELDS = ("state", "action", "reward", "next_state", "physics", "episode", "step")

    def __init__(self, state_dim: int, action_dim: int, physics_dim: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity, self.size = capacity, 0
        self.state = np.zeros((capacity, state_dim), np.float32)
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.next_state = np.zeros((capacity, state_dim), np.float32)
        self.physics = np.zeros((capacity, physics_dim), np.float64)
        self.episode = np.zeros(capacity, np.int64)
        self.step = np.zeros(capacity, np.int64)

    def add(self, state, action, reward, next_state, physics, episode: int, step: int) -> None:
        if self.size >= self.capacity:
            raise ValueError(f"the replay buffer is full ({self.capacity} transitions)")
        i = self.size
        self.state[i], self.action[i], self.reward[i], self.next_state[i] = state, action, reward, next_state
        self.physics[i], self.episode[i], self.step[i] = physics, episode, step
        self.size += 1

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        index = rng.integers(0, self.size, batch)
        return {k: torch.as_tensor(getattr(self, k)[index]) for k in ("state", "action", "reward", "next_state")}

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k)[: self.size] for k in self.FIELDS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], capacity: int) -> ReplayBuffer:
        size = len(arrays["reward"])
        buffer = cls(arrays["state"].shape[1], arrays["action"].shape[1], arrays["physics"].shape[1],
                     max(capacity, size))
        for k in cls.FIELDS:
            getattr(buffer, k)[:size] = arrays[k]
        buffer.size = size
        return buffer


class SAC:
    """The agent: actor, twin critics with a Polyak target, a learned temperature; all on ``device``.

    Actions are in [-1, 1]; the caller maps them to the task's bounds.
    """

    def __init__(self, state_dim: int, action_dim: int, config: SACConfig, device: str | torch.device = "cpu",
                 seed: int = 0) -> None:
        config.validate()
        self.config, self.device = config, torch.device(device)
        torch.manual_seed(seed)
        self.actor = Actor(state_dim, action_dim, config.hidden).to(self.device)
        self.critic = Critic(state_dim, action_dim, config.hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(config.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = -float(action_dim)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=config.lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def act(self, state: np.ndarray, explore: bool) -> np.ndarray:
        """``state [S] -> action [A]`` in [-1, 1]: a sample when exploring, the squashed mean otherwise."""
        x = torch.as_tensor(state, dtype=torch.float32, device=self.device)[None]
        if explore:
            action, _ = self.actor.sample(x, self.generator)
        else:
            action = torch.tanh(self.actor(x)[0])
        return action[0].cpu().numpy()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on critics, actor and temperature from a batch of transitions (no terminal
        states: DMControl episodes end by time limit, so every next state is bootstrapped)."""
        cfg = self.config
        state, action = batch["state"].to(self.device), batch["action"].to(self.device)
        reward, next_state = batch["reward"].to(self.device), batch["next_state"].to(self.device)
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_state, self.generator)
            target = torch.min(*self.critic_target(next_state, next_action)) - alpha * next_log_prob
            target = reward + cfg.gamma * target
        q1, q2 = self.critic(state, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optim.step()

        self.critic.requires_grad_(False)
        new_action, log_prob = self.actor.sample(state, self.generator)
        actor_loss = (alpha * log_prob - torch.min(*self.critic(state, new_action))).mean()
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optim.step()
        self.critic.requires_grad_(True)

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_optim.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optim.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.lerp_(p, cfg.tau)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "alpha": alpha.item(),
                "entropy": -log_prob.mean().item()}

    def state_dict(self) -> dict:
        return {
            "config": dataclasses.asdict(self.config),
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
            "actor_optim": self.actor_optim.state_dict(), "critic_optim": self.critic_optim.state_dict(),
            "alpha_optim": self.alpha_optim.state_dict(), "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.alpha_optim.load_state_dict(state["alpha_optim"])
        self.generator.set_state(state["generator"])

    def export_policy(self, path: str, low: np.ndarray, high: np.ndarray) -> None:
        """Save the deterministic actor as TorchScript ``state [S] -> action [A]`` in ``[low, high]``."""
        policy = DeterministicPolicy(copy.deepcopy(self.actor).cpu().eval(), low, high)
        example = torch.zeros(self.actor.net[0].in_features)
        with warnings.catch_warnings():  # TorchScript is what CheckpointPolicy loads; newer torch calls it deprecated
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.trace(policy, example), path)
