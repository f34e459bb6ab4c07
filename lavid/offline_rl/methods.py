"""Offline RL from few labeled and many unlabeled episodes: the methods compared and their evaluation.

Methods (each trained from the same split and seed):

- ``latent``: :class:`StateWorldModel` on every transition (labeled ones also through the action
  encoder), then a latent policy in its imagination (:func:`train_policy`), executed through the
  supervised IDM on the model's predicted next state (``PolicyConfig.execute``).
- ``labeled_only``: the same model and policy trained on the labeled transitions alone -- what the
  pipeline gets without the unlabeled data.
- ``bc``: behaviour cloning, an MLP ``o -> a`` regressed on the labeled transitions.
- ``random``: uniform actions.

Scores are the DMControl return over a whole episode divided by 10 (the normalized score of the control
paper), from ``episodes`` evaluation episodes in the simulator, observed through the proprioceptive state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lavid.offline_rl.imagination import LatentPolicy, PolicyConfig, PriorPolicy, check_execution, train_policy
from lavid.offline_rl.state_world_model import StateWorldModelConfig, mlp, train_state_world_model
from lavid.offline_rl.model_evals import model_metrics
from lavid.offline_rl.offline_data import Normalizer, OfflineDataError, OfflineEpisode, Transitions
from lavid.data.sim import SimEnv
from lavid.core.config import check

METHODS = ("latent", "labeled_only", "bc", "random")


@dataclass
class BCConfig:
    hidden: int = 256
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3


@dataclass
class OfflineRLConfig:
    """Everything one method needs, for one seed."""

    model: StateWorldModelConfig = field(default_factory=StateWorldModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    # model steps of labeled_only, the baseline on the labeled transitions alone (0: model.steps). It sees a
    # tenth of latent's data, so the same step count overfits it: set to where it scores best, measured
    # (BENCHMARKS.md, offline RL part 6)
    labeled_only_model_steps: int = 0

    def validate(self, prefix: str = "") -> None:
        """The ``bc`` section and what ``model`` and ``policy`` need of each other;
        :func:`lavid.core.config.load_config` validates each of them with its own ``validate``."""
        for name in ("hidden", "steps", "batch_size"):
            check(getattr(self.bc, name) >= 1, f"bc.{name}", f"must be >= 1, got {getattr(self.bc, name)}")
        check(self.bc.lr > 0, "bc.lr", f"must be > 0, got {self.bc.lr}")
        check(self.labeled_only_model_steps >= 0, "labeled_only_model_steps",
              f"must be >= 0 (0: model.steps), got {self.labeled_only_model_steps}")
        check_execution(self.policy.execute, self.model.pseudo > 0)

    def model_for(self, method: str) -> StateWorldModelConfig:
        """The model config ``method`` trains with: ``labeled_only`` takes its own step count when set."""
        if method == "labeled_only" and self.labeled_only_model_steps:
            return replace(self.model, steps=self.labeled_only_model_steps)
        return self.model


class BCPolicy(nn.Module):
    """``obs [B, O] -> action [B, A]`` in [-1, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, normalizer: Normalizer) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.net = mlp(obs_dim, hidden, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(self.normalizer(obs)))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations ``[B, O]`` -> actions ``[B, A]`` on the observations' device."""
        return self(obs.to(self.normalizer.mean.device)).to(obs.device)


def train_bc(data: Transitions, config: BCConfig, seed: int = 0, device: str | torch.device = "cpu") -> BCPolicy:
    if len(data.labeled) == 0:
        raise OfflineDataError("behaviour cloning needs labeled transitions")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    obs, action = data.obs[data.labeled].to(device), data.action.to(device)
    policy = BCPolicy(obs.shape[1], data.action.shape[1], config.hidden, Normalizer.fit(obs)).to(device)
    optim = torch.optim.Adam(policy.parameters(), lr=config.lr)
    for _ in range(config.steps):
        pick = torch.randint(len(obs), (config.batch_size,), generator=generator).to(device)
        loss = F.mse_loss(policy(obs[pick]), action[pick])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return policy.eval()


class RandomPolicy:
    def __init__(self, action_dim: int, seed: int) -> None:
        self.action_dim, self.rng = action_dim, np.random.default_rng(seed)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.rng.uniform(-1, 1, (obs.shape[0], self.action_dim)), dtype=torch.float32)


def evaluate_policy(policy, task: str, episodes: int, seed: int, action_repeat: int) -> list[float]:
    """Normalized scores (return ÷ 10) of ``episodes`` episodes in the simulator, one environment each,
    stepped together (one batched forward pass a step)."""
    envs = [SimEnv(task, seed=seed * 1_000 + i, action_repeat=action_repeat) for i in range(episodes)]
    try:
        obs = [env.reset_state() for env in envs]
        totals, done = np.zeros(episodes), np.zeros(episodes, bool)
        while not done.all():
            actions = policy.act(torch.as_tensor(np.stack(obs))).numpy()
            for i, env in enumerate(envs):
                if done[i]:
                    continue
                unit = np.clip(actions[i], -1, 1)
                reward, done[i] = env.step(env.action_low + (unit + 1) * 0.5 * (env.action_high - env.action_low))
                totals[i] += reward
                obs[i] = env.proprio()
        return (totals / 10).tolist()
    finally:
        for env in envs:
            env.close()


def check_task_matches(episodes: list[OfflineEpisode], task: str, action_repeat: int) -> None:
    """The data's observation and action sizes must be ``task``'s, or its policies cannot act there."""
    env = SimEnv(task, seed=0, action_repeat=action_repeat)
    try:
        state_dim, action_dim = env.reset_state().shape[0], env.action_dim
    finally:
        env.close()
    obs_dim = episodes[0].obs.shape[1]
    data_actions = {ep.action.shape[1] for ep in episodes if ep.labeled}
    if obs_dim != state_dim or data_actions - {action_dim}:
        raise OfflineDataError(
            f"the data has {obs_dim}-d observations and {sorted(data_actions)}-d actions, but {task} has "
            f"{state_dim}-d states and {action_dim}-d actions: is it data of another task?")


def run_method(method: str, episodes: list[OfflineEpisode], config: OfflineRLConfig, task: str, seed: int,
               eval_episodes: int, action_repeat: int, progress: bool = False,
               probe: list[OfflineEpisode] | None = None, executions: Sequence[str] = (),
               device: str | torch.device = "cpu") -> dict:
    """Train ``method`` on ``episodes`` (already split) with ``seed`` and score it; returns a result row.

    ``probe``: the unlabeled episodes with their actions given back, for scoring the latent-action model
    only (:func:`~lavid.offline_rl.model_evals.model_metrics`, the row's ``model`` entry); never trained on.
    ``executions``: for the model-based methods, also score the same trained policy executed each of these
    ways (``PolicyConfig.execute``), on the same evaluation episodes: the row's ``execute_scores``, mode ->
    mean score (``score`` stays the configured execution's). The model-based methods' rows also carry
    ``prior_score``: the model's prior mean executed the configured way, with no actor (:class:`PriorPolicy`),
    on the same evaluation episodes. ``device``: where the learners train and act (the simulator steps on
    the CPU)."""
    if method not in METHODS:
        raise OfflineDataError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    for mode in executions:  # a bad mode stops before any training
        check_execution(mode, config.model.pseudo > 0, name="execution")
    data = Transitions.from_episodes(episodes)
    start = time.time()
    extra: dict = {}
    if method == "random":
        policy = RandomPolicy(data.action.shape[1] if len(data.action) else _action_dim(task), seed)
    elif method == "bc":
        policy = train_bc(data, config.bc, seed, device)
    else:
        model = train_state_world_model(data, config.model_for(method), seed, labeled_only=method == "labeled_only",
                                   progress=progress, device=device)
        starts = data.obs[data.labeled] if method == "labeled_only" else data.obs
        policy, history = train_policy(model, starts, config.policy, seed, progress=progress)
        extra = {"imagined_return": history[-1]["imagined_return"], "prior_kl": history[-1]["prior_kl"],
                 "history": history}
        if probe:
            extra["model"] = model_metrics(model, probe, seed)
    train_s = time.time() - start
    scores = evaluate_policy(policy, task, eval_episodes, seed=10_000 + seed, action_repeat=action_repeat)
    if isinstance(policy, LatentPolicy):  # the same model's prior mean, no actor: what RL in imagination added
        extra["prior_score"] = float(np.mean(evaluate_policy(
            PriorPolicy(policy.model, config.policy.execute), task, eval_episodes, seed=10_000 + seed,
            action_repeat=action_repeat)))
    if executions and isinstance(policy, LatentPolicy):
        extra["execute_scores"] = {
            mode: float(np.mean(scores if mode == config.policy.execute else evaluate_policy(
                policy.executing(mode), task, eval_episodes, seed=10_000 + seed, action_repeat=action_repeat)))
            for mode in executions}
    used = 0 if method == "random" else len(data.labeled)
    return {"method": method, "seed": seed, "score": float(np.mean(scores)), "scores": scores,
            "labeled_transitions": used,
            "unlabeled_transitions": len(data) - len(data.labeled) if method == "latent" else 0,
            "train_s": round(train_s, 1), **extra}


def _action_dim(task: str) -> int:
    env = SimEnv(task, seed=0)
    try:
        return env.action_dim
    finally:
        env.close()
