"""Closed-loop goal reaching in the simulator: agents act, the simulator steps and renders, repeat.

Every agent acts for ``E`` episodes at once (one call a step, batched over episodes); the simulators are
stepped one after another. Agents:

- :class:`PlanningAgent`: model-predictive control through a world model. It encodes the last
  ``context`` observed frames, plans ``H`` actions with CEM or MPPI against the distance between the
  imagined state after ``H`` steps and the goal image's state, executes the first ``receding`` of them
  (1: replan every step; the anchors' protocol executes all 5 of a horizon-5 plan), and warm-starts the
  next plan from the rest.
- :class:`RandomAgent`: uniform actions in the bounds. :class:`ReplayAgent`: a fixed action sequence
  (replaying the actions that reached a stored goal is the oracle).

Shapes: ``E`` episodes, ``T`` steps, ``A`` action entries, ``N`` tokens of ``D`` channels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from lavid.planning.dynamics import ActionDynamics
from lavid.planning.planner import PlannerConfig, plan, seeded_generators, warm_start


class Agent(Protocol):
    def act(self, frames: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        """``frames`` uint8 ``[E, t+1, 3, H, W]`` seen so far, ``actions [E, t, A]`` executed -> ``[E, A]``."""


class RandomAgent:
    """Uniform random actions in ``[low, high]`` (``[A]`` each), from a seeded generator."""

    def __init__(self, low: np.ndarray, high: np.ndarray, seed: int) -> None:
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.rng = np.random.default_rng(seed)

    def act(self, frames: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, size=(frames.shape[0], self.low.shape[0])).astype(np.float32)


class ReplayAgent:
    """Plays ``actions [E, T, A]`` in order (zeros once they run out)."""

    def __init__(self, actions: np.ndarray) -> None:
        self.actions = np.asarray(actions, np.float32)

    def act(self, frames: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        step = actions.shape[1]
        if step < self.actions.shape[1]:
            return self.actions[:, step]
        return np.zeros((self.actions.shape[0], self.actions.shape[2]), np.float32)


class GoalCost:
    """``‖ŝ_t+H − s_goal‖`` (or summed over every imagined step) for candidate action sequences.

    Args:
        dynamics: the world model (and controller) to imagine with.
        context: ``[E, S, N, D]`` the observed states; past: ``[E, S-1, C]`` their transitions' conditions.
        previous: ``[E, A]`` the action executed into the last observed state, for a controller that sees it
            (``None``: none executed yet).
        goals: ``[E, N, D]`` the goal images' states.
        norm: ``l2`` (the reference paper's) or ``l1``, over tokens and channels.
        every_step: sum the distance over all ``H`` imagined states instead of the last one.
        chunk: rollouts per model call (0: all ``E·K`` at once). On a CPU, calls of a few hundred rollouts
            are faster than one of thousands (BENCHMARKS.md); the result is the same.
    """

    def __init__(self, dynamics: ActionDynamics, context: torch.Tensor, past: torch.Tensor, goals: torch.Tensor,
                 norm: Literal["l1", "l2"] = "l2", every_step: bool = False, chunk: int = 0,
                 previous: torch.Tensor | None = None) -> None:
        if norm not in ("l1", "l2") or chunk < 0:
            raise ValueError(f"norm must be l1 or l2 and chunk >= 0, got {norm!r} and {chunk}")
        self.dynamics, self.context, self.past, self.goals = dynamics, context, past, goals
        self.previous = previous
        self.norm, self.every_step, self.chunk = norm, every_step, chunk

    @torch.no_grad()
    def __call__(self, actions: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        count, samples = actions.shape[:2]
        context = self.context[episodes].repeat_interleave(samples, dim=0)
        past = self.past[episodes].repeat_interleave(samples, dim=0)
        flat, chunk = actions.flatten(0, 1), self.chunk or count * samples
        previous = None if self.previous is None else self.previous[episodes].repeat_interleave(samples, dim=0)
        imagined = torch.cat([self.dynamics.imagine(context[i:i + chunk], past[i:i + chunk], flat[i:i + chunk],
                                                    None if previous is None else previous[i:i + chunk])
                              for i in range(0, count * samples, chunk)])  # [E·K, H, N, D]
        if not self.every_step:
            imagined = imagined[:, -1:]
        difference = imagined - self.goals[episodes].repeat_interleave(samples, dim=0)[:, None]
        distance = difference.flatten(2).norm(dim=-1) if self.norm == "l2" else difference.flatten(2).abs().sum(-1)
        return distance.sum(dim=1).view(count, samples)


class PlanningAgent:
    """Model-predictive control through ``dynamics`` toward the states of ``goal_frames``.

    Args:
        dynamics: the world model (and, for a latent model, its controller).
        goal_frames: uint8 ``[E, 3, H, W]`` the goal images.
        low, high: ``[A]`` action bounds; config: the planner; seed: episode ``e`` plans with seed ``seed + e``.
        context: observed steps the world model sees (the last ones).
        norm, every_step, chunk: see :class:`GoalCost`.
    """

    def __init__(self, dynamics: ActionDynamics, goal_frames: torch.Tensor, low: np.ndarray, high: np.ndarray,
                 config: PlannerConfig, seed: int, context: int = 4, norm: Literal["l1", "l2"] = "l2",
                 every_step: bool = False, chunk: int = 0, device: torch.device | str = "cpu",
                 receding: int = 1) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1 step, got {context}")
        config.validate("planner")
        check_receding(receding, config)
        self.receding, self.queue, self.plan_seconds = receding, [], []
        self.dynamics, self.config, self.context, self.norm, self.every_step = dynamics, config, context, norm, every_step
        self.chunk = chunk
        self.device = torch.device(device)
        self.low = torch.as_tensor(low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(high, dtype=torch.float32, device=self.device)
        self.goals = dynamics.encode(goal_frames[:, None].to(self.device))[:, 0]
        self.generators = seeded_generators(range(seed, seed + goal_frames.shape[0]), self.device)
        self.mean: torch.Tensor | None = None
        self.last_cost: torch.Tensor | None = None

    @torch.no_grad()
    def act(self, frames: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        if self.queue:
            return self.queue.pop(0)
        start = time.perf_counter()
        states = self.dynamics.encode(frames[:, -self.context:].to(self.device))
        seen = states.shape[1] - 1
        executed = actions[:, actions.shape[1] - seen:] if seen else actions[:, :0]
        past = self.dynamics.observed_conditions(states, executed.to(self.device))
        previous = actions[:, -1].to(self.device) if actions.shape[1] else None  # into the last frame seen
        cost = GoalCost(self.dynamics, states, past, self.goals, self.norm, self.every_step, self.chunk, previous)
        result = plan(cost, self.low, self.high, self.config, self.generators, mean=self.mean)
        self.mean = warm_start(result.mean, self.low, self.high, self.receding)
        self.last_cost = result.cost
        self.queue = [result.actions[:, r].cpu().numpy() for r in range(self.receding)]
        self.plan_seconds.append(time.perf_counter() - start)
        return self.queue.pop(0)


def check_receding(receding: int, config: PlannerConfig) -> None:
    """Receding horizon: the planned actions executed before the next plan, ``1 <= receding <= horizon``."""
    if not 1 <= receding <= config.horizon:
        raise ValueError(f"receding must be in [1, horizon={config.horizon}], got {receding}")


@dataclass
class Episodes:
    """What happened: ``frames`` uint8 ``[E, T+1, 3, H, W]``, ``actions [E, T, A]``, ``effector [E, T+1, P]``
    (:meth:`lavid.data.sim.SimEnv.effector` after each step; the first is the start) and ``qpos``."""

    frames: np.ndarray
    actions: np.ndarray
    effector: np.ndarray
    qpos: np.ndarray | None = None  # [E, T·R+1, Q] joint positions after every control step (R = action repeat)


def run_closed_loop(envs: list, agent: Agent, steps: int, progress: bool = True, desc: str = "",
                    history: tuple[np.ndarray, np.ndarray] | None = None) -> Episodes:
    """Run ``agent`` for ``steps`` steps in ``envs`` (:class:`lavid.data.sim.SimEnv`, already in their start states).

    ``history``: uint8 frames ``[E, K, 3, H, W]`` and actions ``[E, K, A]`` that led to the start states (the last
    action leads to the start), shown to the agent before its own, so its step count is ``actions.shape[1] - K``
    (give it only to agents that read the frames, not to :class:`ReplayAgent`); the returned episodes hold the
    agent's own steps only.
    """
    from tqdm.auto import tqdm

    before_frames: list[np.ndarray] = [] if history is None else list(np.moveaxis(history[0], 1, 0))
    before_actions: list[np.ndarray] = ([] if history is None else
                                        [a.astype(np.float32) for a in np.moveaxis(history[1], 1, 0)])
    if len(before_frames) != len(before_actions) or any(len(b) != len(envs) for b in before_frames + before_actions):
        raise ValueError(f"history must hold K frames and K actions for each of the {len(envs)} episodes")
    frames = [np.stack([env.render() for env in envs])]
    effector = [np.stack([env.effector() for env in envs])]
    actions: list[np.ndarray] = []
    traces = [[env.qpos()] for env in envs]
    over = [False] * len(envs)  # a finished episode stays where it ended (dm_control would reset it)
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        seen = torch.from_numpy(np.stack(before_frames + frames, axis=1))
        acted = before_actions + actions
        done = torch.from_numpy(np.stack(acted, axis=1)) if acted else torch.zeros(len(envs), 0, envs[0].action_dim)
        action = np.asarray(agent.act(seen, done), np.float32)
        if action.shape != (len(envs), envs[0].action_dim):
            raise ValueError(f"the agent gave actions {action.shape}, the task takes {(len(envs), envs[0].action_dim)}")
        action = np.clip(action, envs[0].action_low, envs[0].action_high)
        for i, (env, a) in enumerate(zip(envs, action)):
            if not over[i]:
                over[i] = env.step(a, trace=traces[i])[1]
        actions.append(action)
        frames.append(np.stack([env.render() for env in envs]))
        effector.append(np.stack([env.effector() for env in envs]))
    length = 1 + steps * envs[0].action_repeat
    qpos = np.stack([np.stack(t + t[-1:] * (length - len(t))) for t in traces])  # an ended episode stays put
    return Episodes(np.stack(frames, axis=1), np.stack(actions, axis=1), np.stack(effector, axis=1), qpos)
