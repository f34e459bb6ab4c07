"""Offline RL, part 1: the state-based SAC agent and the policies that make datasets of known quality."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lavid.control.sac import SAC, ReplayBuffer, SACConfig
from lavid.data.policies import PolicyError, make_policy, split_checkpoint
from lavid.data.sim import SimEnv

ROOT = Path(__file__).resolve().parents[1]


def test_sac_learns_a_one_step_task():
    """A contextual bandit: reward -(a - tanh(s))². SAC's deterministic action must approach the optimum."""
    rng = np.random.default_rng(0)
    agent = SAC(2, 1, SACConfig(hidden=64, lr=3e-3, batch_size=128, gamma=0.5, init_temperature=0.01), seed=0)
    buffer = ReplayBuffer(2, 1, 1, 4000)
    for i in range(4000):
        state = rng.uniform(-1, 1, 2).astype(np.float32)
        action = rng.uniform(-1, 1, 1).astype(np.float32)
        reward = -float((action[0] - np.tanh(2 * state[0])) ** 2)
        buffer.add(state, action, reward, np.zeros(2, np.float32), np.zeros(1), i, 0)
    test = rng.uniform(-1, 1, (64, 2)).astype(np.float32)
    target = np.tanh(2 * test[:, 0])

    def error():
        return float(np.mean([(agent.act(s, explore=False)[0] - t) ** 2 for s, t in zip(test, target)]))

    before = error()
    for _ in range(600):
        agent.update(buffer.sample(128, rng))
    assert error() < 0.05 < before


def test_exported_policy_is_a_checkpoint_policy_in_bounds(tmp_path):
    agent = SAC(5, 2, SACConfig(hidden=16), seed=0)
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)
    path = tmp_path / "policy.pt"
    agent.export_policy(str(path), low, high)
    policy = make_policy(f"checkpoint:{path}", 5, low, high)
    state = np.random.default_rng(1).standard_normal(5).astype(np.float32)
    unit = agent.act(state, explore=False)
    np.testing.assert_allclose(policy.act(state), low + (unit + 1) / 2 * (high - low), rtol=1e-5)
    noisy = make_policy(f"checkpoint:{path}@0.5", 5, low, high)
    noisy.reset(np.random.default_rng(0))
    acts = np.stack([noisy.act(state) for _ in range(200)])
    assert acts.std(0).min() > 0.05 and (acts >= low).all() and (acts <= high).all()


def test_checkpoint_noise_is_parsed_and_checked():
    assert split_checkpoint("checkpoint:a/b.pt") == ("a/b.pt", 0.0)
    assert split_checkpoint("checkpoint:a@b/c.pt@0.25") == ("a@b/c.pt", 0.25)
    with pytest.raises(PolicyError, match="noise"):
        make_policy("checkpoint:x.pt@lots", 3, np.zeros(1), np.ones(1))


def test_sac_update_is_seeded():
    def run():
        rng = np.random.default_rng(0)
        agent = SAC(3, 1, SACConfig(hidden=8, batch_size=4), seed=3)
        buffer = ReplayBuffer(3, 1, 1, 16)
        for i in range(16):
            buffer.add(rng.standard_normal(3), rng.uniform(-1, 1, 1), 1.0, rng.standard_normal(3), np.zeros(1), 0, i)
        for _ in range(3):
            agent.update(buffer.sample(4, rng))
        return agent.act(np.ones(3, np.float32), explore=True)

    np.testing.assert_array_equal(run(), run())


def run_expert(out, steps, *extra):
    return subprocess.run(
        [sys.executable, str(ROOT / "data_prep/train_expert.py"), "--task", "cartpole-balance", "--out", str(out),
         "--steps", str(steps), "--action-repeat", "8", "--eval-every", "125", "--eval-episodes", "1",
         "--seed-steps", "50", "--batch-size", "32", "--hidden", "32", "--milestones", "low=0,never=1e9",
         "--no-progress", *extra],
        capture_output=True, text=True, timeout=600,
    )


def test_train_expert_writes_policies_replay_and_resumes(tmp_path):
    out = tmp_path / "agent"
    first = run_expert(out, 125)
    assert first.returncode == 0, first.stderr
    assert "not reached: never" in first.stdout
    second = run_expert(out, 250)  # resumes from the evaluation at step 125
    assert second.returncode == 0, second.stderr
    assert "resuming cartpole-balance at step 125" in second.stderr
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [125, 250]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["milestones"]["low"]["step"] == 125 and summary["missed"] == ["never"]
    for name in ("low.pt", "final.pt", "policies/step_125.pt", "policies/step_250.pt", "returns.png"):
        assert (out / name).exists(), name
    replay = np.load(out / "replay.npz")
    assert replay["reward"].shape == (250,) and replay["episode"].max() == 1  # two episodes of 125 steps
    # the stored physics state re-creates the stored state
    env = SimEnv("cartpole-balance", seed=0, action_repeat=8)
    env.reset_state()
    env.restore(replay["physics"][130])
    np.testing.assert_allclose(env.physics.get_state(), replay["physics"][130])
    env.close()
    policy = make_policy(f"checkpoint:{out / 'final.pt'}", replay["state"].shape[1], np.array([-1.0], np.float32),
                         np.array([1.0], np.float32))
    assert policy.act(replay["state"][0]).shape == (1,)


def test_train_expert_rejects_bad_arguments(tmp_path):
    bad = run_expert(tmp_path / "x", 0)
    assert bad.returncode == 2 and "steps must be >= 1" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = run_expert(tmp_path / "y", 10, "--milestones", "medium")
    assert bad.returncode == 2 and "NAME=RETURN" in bad.stderr
    assert not (tmp_path / "x").exists()
