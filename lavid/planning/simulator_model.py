"""The simulator as the planner's model: the protocol's ceiling, which tells the planner's errors from the
world model's.

:class:`SimulatorAgent` plans with the same planner (:func:`lavid.planning.planner.plan`), budget and receding
horizon as the world-model agents, but rolls every candidate out in MuJoCo itself, from the episode's true
current state (``mujoco.rollout``: all candidates of an episode in one C call, no rendering), and costs it by
the true distance of the joint positions to the goal's. A task it cannot solve is beyond the planner or the
budget, not the world model.

Shapes: ``E`` episodes, ``K`` candidates, ``H`` planned steps, ``A`` action entries, ``Q`` joint positions.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lavid.planning.mpc import check_receding
from lavid.planning.planner import PlannerConfig, plan, seeded_generators, warm_start


class SimulatorCost:
    """``‖qpos_t − qpos_goal‖₂`` after each candidate's last step (or summed over its steps), rolled out in
    the simulator.

    Args:
        envs: :class:`lavid.data.sim.SimEnv` per episode, in their current states (read, never changed).
        goal_qpos: ``[E, Q]``.
        every_step: sum the distance over every planned step instead of the last one.
    """

    def __init__(self, envs: list, goal_qpos: np.ndarray, every_step: bool = False) -> None:
        import mujoco
        from mujoco import rollout

        self._rollout = rollout.rollout
        self.envs, self.goal_qpos, self.every_step = envs, np.asarray(goal_qpos, np.float64), every_step
        self.models = [env.physics.model.ptr for env in envs]
        self.scratch = [mujoco.MjData(model) for model in self.models]  # the rollouts' own data: envs stay put
        self.kind = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.starts = []
        for env, model in zip(envs, self.models):
            state = np.zeros(mujoco.mj_stateSize(model, self.kind))
            mujoco.mj_getState(model, env.physics.data.ptr, state, self.kind)
            self.starts.append(state)

    def __call__(self, actions: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        """``actions [E', K, H, A]`` for ``episodes [E']`` -> costs ``[E', K]``."""
        costs = []
        for candidates, e in zip(actions.cpu().numpy().astype(np.float64), episodes.tolist()):
            env, model = self.envs[e], self.models[e]
            repeat = env.action_repeat
            control = np.clip(candidates, env.action_low, env.action_high).repeat(repeat, axis=1)  # [K, H·R, A]
            start = np.tile(self.starts[e], (control.shape[0], 1))
            states, _ = self._rollout(model, self.scratch[e], start, control)  # [K, H·R, 1 + nq + nv + na]
            qpos = states[:, repeat - 1::repeat, 1:1 + model.nq]  # after each planned step: [K, H, Q]
            distance = np.linalg.norm(qpos - self.goal_qpos[e], axis=-1)
            costs.append(distance.sum(-1) if self.every_step else distance[:, -1])
        return torch.as_tensor(np.stack(costs), dtype=torch.float32)


class SimulatorAgent:
    """Model-predictive control with the simulator as the model (:class:`SimulatorCost`).

    Args:
        envs: the episodes' simulators (the closed loop steps them; this agent only reads their state).
        goal_qpos: ``[E, Q]`` the goals' joint positions.
        low, high: ``[A]`` action bounds; config: the planner; seed: episode ``e`` plans with seed ``seed + e``.
        receding: planned steps executed before the next plan.
        every_step: see :class:`SimulatorCost`.
    """

    def __init__(self, envs: list, goal_qpos: np.ndarray, low: np.ndarray, high: np.ndarray, config: PlannerConfig,
                 seed: int, receding: int = 1, every_step: bool = False) -> None:
        config.validate("planner")
        check_receding(receding, config)
        self.envs, self.goal_qpos, self.config, self.receding, self.every_step = envs, goal_qpos, config, receding, every_step
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)
        self.generators = seeded_generators(range(seed, seed + len(envs)), "cpu")
        self.mean: torch.Tensor | None = None
        self.queue: list[np.ndarray] = []
        self.plan_seconds: list[float] = []

    def act(self, frames: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        if self.queue:
            return self.queue.pop(0)
        start = time.perf_counter()
        cost = SimulatorCost(self.envs, self.goal_qpos, self.every_step)
        result = plan(cost, self.low, self.high, self.config, self.generators, mean=self.mean)
        self.mean = warm_start(result.mean, self.low, self.high, self.receding)
        self.queue = [result.actions[:, r].numpy() for r in range(self.receding)]
        self.plan_seconds.append(time.perf_counter() - start)
        return self.queue.pop(0)
