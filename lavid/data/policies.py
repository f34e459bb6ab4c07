"""Behaviour policies for collecting simulator trajectories: uniform, temporally smooth, or a trained agent.

Every policy is seeded per episode, so the same ``(seed, episode)`` gives the same actions in any worker.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

POLICY_NAMES = ("random", "smooth", "checkpoint:PATH", "checkpoint:PATH@NOISE")


class Policy(Protocol):
    def reset(self, rng: np.random.Generator) -> None: ...

    def act(self, state: np.ndarray) -> np.ndarray:
        """``[S]`` proprioceptive state -> ``[A]`` action within the bounds."""
        ...


class PolicyError(Exception):
    """Unknown policy name or an unusable checkpoint."""


class UniformPolicy:
    """Independent uniform actions in ``[low, high]`` each step (jittery motion)."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low, self.high = low, high
        self.rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, state: np.ndarray) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)


class SmoothPolicy:
    """Temporally correlated actions: an AR(1) process ``x_t = ρ x_{t-1} + √(1-ρ²) ε_t`` in ``[-1, 1]``.

    ``x`` has unit stationary variance before clipping; it is mapped linearly onto ``[low, high]``.
    With ``ρ = 0.9`` an action keeps its direction for about ten steps, so bodies move rather than
    shiver.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, rho: float = 0.9, scale: float = 0.6) -> None:
        if not 0.0 <= rho < 1.0:
            raise PolicyError(f"smooth policy needs 0 <= rho < 1, got {rho}")
        self.low, self.high, self.rho, self.scale = low, high, rho, scale
        self.rng = np.random.default_rng(0)
        self.x = np.zeros_like(low)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.x = rng.standard_normal(self.low.shape) * self.scale

    def act(self, state: np.ndarray) -> np.ndarray:
        noise = self.rng.standard_normal(self.low.shape) * self.scale
        self.x = self.rho * self.x + np.sqrt(1.0 - self.rho**2) * noise
        unit = np.clip(self.x, -1.0, 1.0)
        return (self.low + (unit + 1.0) * 0.5 * (self.high - self.low)).astype(np.float32)


class CheckpointPolicy:
    """A trained agent saved as TorchScript: ``module(state [S] float32) -> action [A]``.

    Args:
        path: file written by ``torch.jit.save``.
        state_dim, low, high: the task's state size and action bounds (checked at load).
        noise: standard deviation of Gaussian exploration noise added to the action, relative to the
            half range (0: deterministic), for medium/replay-like datasets.
    """

    def __init__(self, path: str, state_dim: int, low: np.ndarray, high: np.ndarray, noise: float = 0.0) -> None:
        import torch

        try:
            self.module = torch.jit.load(path, map_location="cpu").eval()
        except Exception as error:
            raise PolicyError(f"cannot load policy checkpoint {path!r} (need a TorchScript file): {error}") from None
        self.low, self.high, self.noise = low, high, noise
        self.rng = np.random.default_rng(0)
        probe = self._forward(np.zeros(state_dim, np.float32))
        if probe.shape != low.shape:
            raise PolicyError(
                f"policy checkpoint {path} maps a [{state_dim}] state to shape {tuple(probe.shape)}, "
                f"but the task's actions have shape {tuple(low.shape)}"
            )

    def _forward(self, state: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.as_tensor(state, dtype=torch.float32)).cpu().numpy().astype(np.float32)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, state: np.ndarray) -> np.ndarray:
        action = self._forward(state)
        if self.noise:
            action = action + self.rng.standard_normal(action.shape) * self.noise * (self.high - self.low) / 2
        return np.clip(action, self.low, self.high).astype(np.float32)


def split_checkpoint(name: str) -> tuple[str, float]:
    """``checkpoint:PATH`` or ``checkpoint:PATH@NOISE`` -> (PATH, NOISE); NOISE is the exploration noise's
    standard deviation relative to the action's half range (0 when absent)."""
    spec = name.split(":", 1)[1]
    path, sep, noise = spec.rpartition("@")
    if not sep:
        return spec, 0.0
    try:
        value = float(noise)
    except ValueError:
        raise PolicyError(f"policy {name!r}: the noise after '@' must be a number, got {noise!r}") from None
    if not value >= 0 or not path:
        raise PolicyError(f"policy {name!r}: need checkpoint:PATH@NOISE with a path and NOISE >= 0")
    return path, value


def check_policy_name(name: str) -> None:
    if name in ("random", "smooth"):
        return
    if name.startswith("checkpoint:") and len(name) > len("checkpoint:"):
        split_checkpoint(name)
        return
    raise PolicyError(f"unknown policy {name!r}; valid policies: {', '.join(POLICY_NAMES)}")


def make_policy(name: str, state_dim: int, low: np.ndarray, high: np.ndarray) -> Policy:
    """Build a policy from its command-line name: ``random``, ``smooth`` or ``checkpoint:PATH[@NOISE]``."""
    check_policy_name(name)
    if name == "random":
        return UniformPolicy(low, high)
    if name == "smooth":
        return SmoothPolicy(low, high)
    path, noise = split_checkpoint(name)
    return CheckpointPolicy(path, state_dim, low, high, noise=noise)
