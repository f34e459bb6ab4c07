"""Train a state-based SAC agent on a simulator task and keep the policies that make datasets of known quality.

Every ``eval_every`` steps (at the end of an episode) the deterministic policy is evaluated on its own
environments and saved as TorchScript (``policies/step_N.pt``); the first policy whose evaluation return
reaches a milestone (e.g. ``medium=400``) is also saved under the milestone's name (``medium.pt``), and the
last one as ``final.pt``. The replay buffer, with the physics state of every step, is ``replay.npz``: the
medium-replay data of offline RL. ``log.csv`` and ``returns.png`` show the learning curve. A killed run
resumes from ``state.pt`` at the last evaluation.

Steps are stored steps: one action held for ``action_repeat`` control steps, as in ``data_prep/dmc.py``,
so the policies act at the rate the pixel datasets are rendered at.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lavid.offline_rl.sac import SAC, ReplayBuffer, SACConfig
from lavid.data.sim import SimEnv, check_task

log = logging.getLogger(__name__)


@dataclass
class ExpertConfig:
    """What ``data_prep/train_expert.py`` trains (``steps``: stored steps of environment interaction)."""

    task: str
    out: str
    steps: int = 100_000
    action_repeat: int = 2
    seed: int = 0
    eval_every: int = 10_000
    eval_episodes: int = 5
    milestones: dict[str, float] = field(default_factory=lambda: {"medium": 400.0, "expert": 900.0})
    sac: SACConfig = field(default_factory=SACConfig)
    device: str = "cpu"  # where SAC trains; the simulator steps on the CPU

    def validate(self) -> None:
        check_task(self.task)
        for name in ("steps", "action_repeat", "eval_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, value in self.milestones.items():
            if not name.isidentifier() or name in ("final", "state"):
                raise ValueError(f"milestone name {name!r} must be a plain word other than final/state")
            if not math.isfinite(value):
                raise ValueError(f"milestone {name} must be a finite return, got {value}")
        self.sac.validate()


def evaluate(agent: SAC, env: SimEnv, episodes: int) -> float:
    """Mean return of the deterministic policy over ``episodes`` full episodes."""
    returns = []
    for _ in range(episodes):
        state, total, done = env.reset_state(), 0.0, False
        while not done:
            reward, done = env.step(_to_bounds(agent.act(state, explore=False), env))
            total += reward
            state = env.proprio()
        returns.append(total)
    return float(np.mean(returns))


def _to_bounds(action: np.ndarray, env: SimEnv) -> np.ndarray:
    return env.action_low + (action + 1.0) * 0.5 * (env.action_high - env.action_low)


def _plot(rows: list[dict], path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["eval_return"] for r in rows], marker="o")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"SAC on {task}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_expert(config: ExpertConfig, progress: bool = True) -> dict:
    """Train; returns the summary also written to ``OUT/summary.json`` (milestones reached, final return)."""
    from tqdm.auto import tqdm

    config.validate()
    out = Path(config.out)
    (out / "policies").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))

    probe = SimEnv(config.task, seed=config.seed, action_repeat=config.action_repeat)
    state_dim, action_dim = probe.reset_state().shape[0], probe.action_dim
    physics_dim = probe.physics.get_state().shape[0]
    episode_len = probe.max_steps
    probe.close()
    capacity = config.steps + episode_len
    agent = SAC(state_dim, action_dim, config.sac, device=config.device, seed=config.seed)
    buffer = ReplayBuffer(state_dim, action_dim, physics_dim, capacity)
    step, episode, rows, reached = 0, 0, [], {}
    rng = np.random.default_rng(config.seed)
    state_path = out / "state.pt"
    if state_path.exists():
        saved = torch.load(state_path, weights_only=False, map_location="cpu")
        agent.load_state_dict(saved["agent"])
        buffer = ReplayBuffer.from_arrays(saved["buffer"], capacity)
        step, episode, rows, reached = saved["step"], saved["episode"], saved["rows"], saved["reached"]
        rng.bit_generator.state = saved["rng"]
        log.info("resuming %s at step %d (episode %d)", config.task, step, episode)

    env = SimEnv(config.task, seed=config.seed * 1_000_003 + episode, action_repeat=config.action_repeat)
    eval_env = SimEnv(config.task, seed=config.seed + 10_000 + step, action_repeat=config.action_repeat)
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc=f"SAC {config.task}", unit="step")
    next_eval = (step // config.eval_every + 1) * config.eval_every
    start, train_return, stats = time.time(), float("nan"), {}
    try:
        while step < config.steps:
            state, total, done, t = env.reset_state(), 0.0, False, 0
            while not done:
                physics = env.physics.get_state().copy()
                if step < config.sac.seed_steps:
                    action = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
                else:
                    action = agent.act(state, explore=True)
                reward, done = env.step(_to_bounds(action, env))
                next_state = env.proprio()
                buffer.add(state, action, reward, next_state, physics, episode, t)
                if step >= config.sac.seed_steps and buffer.size >= config.sac.batch_size:
                    stats = agent.update(buffer.sample(config.sac.batch_size, rng))
                state, total, t, step = next_state, total + reward, t + 1, step + 1
                bar.update(1)
            episode, train_return = episode + 1, total
            if step >= next_eval or step >= config.steps:
                next_eval = (step // config.eval_every + 1) * config.eval_every
                value = evaluate(agent, eval_env, config.eval_episodes)
                row = {"step": step, "episode": episode, "train_return": round(train_return, 2),
                       "eval_return": round(value, 2), "alpha": round(stats.get("alpha", float("nan")), 4),
                       "wall_s": round(time.time() - start + (rows[-1]["wall_s"] if rows else 0.0), 1)}
                start = time.time()
                rows.append(row)
                bar.set_postfix(eval_return=f"{value:.0f}")
                agent.export_policy(str(out / "policies" / f"step_{step}.pt"), env.action_low, env.action_high)
                for name, threshold in config.milestones.items():
                    if name not in reached and value >= threshold:
                        agent.export_policy(str(out / f"{name}.pt"), env.action_low, env.action_high)
                        reached[name] = {"step": step, "eval_return": value}
                        log.info("milestone %s reached at step %d: return %.1f", name, step, value)
                _write_log(rows, out)
                tmp = out / "state.pt.tmp"
                torch.save({"agent": agent.state_dict(), "buffer": buffer.arrays(), "step": step,
                            "episode": episode, "rows": rows, "reached": reached,
                            "rng": rng.bit_generator.state}, tmp)
                tmp.replace(state_path)  # a kill mid-write keeps the previous state
    finally:
        bar.close()
        env.close()
        eval_env.close()
    agent.export_policy(str(out / "final.pt"), env.action_low, env.action_high)
    np.savez_compressed(out / "replay.npz", **buffer.arrays())
    _plot(rows, out / "returns.png", config.task)
    summary = {"task": config.task, "steps": step, "episodes": episode, "final_eval_return": rows[-1]["eval_return"],
               "milestones": reached, "missed": sorted(set(config.milestones) - set(reached)),
               "wall_s": rows[-1]["wall_s"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _write_log(rows: list[dict], out: Path) -> None:
    with open(out / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
