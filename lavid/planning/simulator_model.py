"""The simulator as the planner's model: the protocol's ceiling, which tells the planner's errors from the
world model's.

:class:`SimulatorAgent` plans with the same planner (:func:`lavid.planning.planner.plan`), budget and receding
horizon as the world-model agents, but rolls every candidate out in MuJoCo itself, from the episode's true
current state (``mujoco.rollout``: all candidates of an episode in one C call, no rendering), and costs it by
the true distance of the joint positions to the goal's. A task it cannot solve is beyond the planner or the
budget, not the world model.

:class:`FeatureSimulatorCost` keeps the simulator as the model but costs candidates the way a world model's
planner does: it renders each candidate's end state and takes the learned encoder's feature distance to the
goal image (the ``feature_oracle`` row: is the feature space a usable cost, with perfect dynamics?). It renders
``E·K`` images per planner iteration (about 10 ms each at 64 px on this CPU's software OpenGL), so it is run
on fewer pairs than the other rows.

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

    def roll(self, e: int, candidates: np.ndarray) -> tuple[np.ndarray, int]:
        """Episode ``e``'s candidates ``[K, H, A]`` rolled out from its current state: the physics states after
        every physics step ``[K, H·R, 1 + nq + nv + na]`` and ``R``, the physics steps of one planned step
        (``action_repeat`` control steps, each the task's physics substeps, Jaco's 20: the action held as ctrl
        through all of them, as the environment's own step does)."""
        env = self.envs[e]
        repeat = env.action_repeat * env.substeps
        control = np.clip(candidates, env.action_low, env.action_high).repeat(repeat, axis=1)  # [K, H·R, A]
        start = np.tile(self.starts[e], (control.shape[0], 1))
        states, _ = self._rollout(self.models[e], self.scratch[e], start, control)
        return states, repeat

    def __call__(self, actions: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        """``actions [E', K, H, A]`` for ``episodes [E']`` -> costs ``[E', K]``."""
        costs = []
        for candidates, e in zip(actions.cpu().numpy().astype(np.float64), episodes.tolist()):
            states, repeat = self.roll(e, candidates)
            qpos = states[:, repeat - 1::repeat, 1:1 + self.models[e].nq]  # after each planned step: [K, H, Q]
            distance = np.linalg.norm(qpos - self.goal_qpos[e], axis=-1)
            costs.append(distance.sum(-1) if self.every_step else distance[:, -1])
        return torch.as_tensor(np.stack(costs), dtype=torch.float32)


class FeatureSimulatorCost(SimulatorCost):
    """``‖f(render(state_t+H)) − f(goal image)‖₂`` of each candidate, rolled out in the simulator.

    Args:
        envs: as :class:`SimulatorCost`.
        shadows: one more :class:`lavid.data.sim.SimEnv` per episode, of the same task, seed and camera (the same
            scene: reacher's target, Jaco's target), that this cost may move to render the candidates' states.
        goal_features: ``[E, ...]`` the goal images' features.
        encode: uint8 frames ``[B, 1, 3, H, W]`` -> features ``[B, 1, ...]``.
        batch: images encoded per call.
    """

    def __init__(self, envs: list, shadows: list, goal_features: torch.Tensor, encode, batch: int = 300) -> None:
        super().__init__(envs, np.zeros((len(envs), envs[0].physics.model.nq)))
        self.shadows, self.goal_features, self.encode, self.batch = shadows, goal_features, encode, batch

    @torch.no_grad()
    def __call__(self, actions: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        costs = []
        for candidates, e in zip(actions.cpu().numpy().astype(np.float64), episodes.tolist()):
            model, shadow = self.models[e], self.shadows[e]
            states, _ = self.roll(e, candidates)
            final = states[:, -1, 1:1 + model.nq + model.nv]  # [K, Q + V] after the last physics step
            images = []
            for state in final:
                shadow.physics.data.qpos[:] = state[:model.nq]
                shadow.physics.data.qvel[:] = state[model.nq:]
                shadow.physics.forward()
                images.append(shadow.render())
            images = torch.from_numpy(np.stack(images))[:, None]  # [K, 1, 3, H, W]
            features = torch.cat([self.encode(images[i:i + self.batch])[:, 0] for i in range(0, len(images),
                                                                                               self.batch)])
            difference = (features - self.goal_features[e]).flatten(1).float()
            costs.append(difference.norm(dim=-1))
        return torch.stack(costs)


class SimulatorAgent:
    """Model-predictive control with the simulator as the model (:class:`SimulatorCost`).

    Args:
        envs: the episodes' simulators (the closed loop steps them; this agent only reads their state).
        goal_qpos: ``[E, Q]`` the goals' joint positions.
        low, high: ``[A]`` action bounds; config: the planner; seed: episode ``e`` plans with seed ``seed + e``.
        receding: planned steps executed before the next plan.
        every_step: see :class:`SimulatorCost`.
        features: ``(shadows, goal_features, encode)`` to cost by the learned features of the rendered end
            state instead (:class:`FeatureSimulatorCost`, last step only; ``goal_qpos`` is then unused).
    """

    def __init__(self, envs: list, goal_qpos: np.ndarray, low: np.ndarray, high: np.ndarray, config: PlannerConfig,
                 seed: int, receding: int = 1, every_step: bool = False, features: tuple | None = None) -> None:
        if features is not None and every_step:
            raise ValueError("the feature oracle costs the last planned step only (cost_steps=last)")
        self.features = features
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
        cost = (FeatureSimulatorCost(self.envs, *self.features) if self.features is not None
                else SimulatorCost(self.envs, self.goal_qpos, self.every_step))
        result = plan(cost, self.low, self.high, self.config, self.generators, mean=self.mean)
        self.mean = warm_start(result.mean, self.low, self.high, self.receding)
        self.queue = [result.actions[:, r].numpy() for r in range(self.receding)]
        self.plan_seconds.append(time.perf_counter() - start)
        return self.queue.pop(0)
