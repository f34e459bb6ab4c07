"""Offline RL, part 1: the state-based SAC agent and the policies that make datasets of known quality."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lavid.core.config import ConfigError

from lavid.offline_rl.sac import SAC, ReplayBuffer, SACConfig
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
    for device, named in (("cuda:99", "CUDA device(s) here"), ("tpu", "not a torch device")):
        bad = run_expert(tmp_path / "z", 10, "--device", device)
        assert bad.returncode == 2 and named in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def test_device_names_resolve_or_fail_clearly():
    from lavid.core.cli import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    for name, named in (("cuda:99", "CUDA device"), ("tpu", "not a torch device"), ("meta", "auto, cpu or cuda")):
        with pytest.raises(ValueError, match=named):
            resolve_device(name)


# ---- offline RL with latent actions -------------------------------------------------------------------

from lavid.offline_rl.imagination import (  # noqa: E402
    LatentPolicy, PolicyConfig, PriorPolicy, ema_decay, lambda_returns, train_policy)
from lavid.offline_rl.state_world_model import StateWorldModelConfig, train_state_world_model  # noqa: E402
from lavid.offline_rl.model_evals import model_metrics  # noqa: E402
from lavid.offline_rl.offline_data import (  # noqa: E402
    OfflineDataError, OfflineEpisode, Transitions, load_offline, split_labeled,
)


def point_mass_episodes(n: int, length: int = 20, seed: int = 0) -> list[OfflineEpisode]:
    """A 2-D point pushed by its action: o' = o + 0.2 a, reward -|o'|; uniform random actions."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        obs = [rng.uniform(-1, 1, 2)]
        actions = rng.uniform(-1, 1, (length, 2))
        for a in actions:
            obs.append(obs[-1] + 0.2 * a)
        obs = np.asarray(obs, np.float32)
        reward = -np.linalg.norm(obs[1:], axis=1).astype(np.float32)
        episodes.append(OfflineEpisode(obs, reward, actions.astype(np.float32), f"pm/{i}"))
    return episodes


def test_split_removes_the_actions_of_unlabeled_episodes():
    episodes = point_mass_episodes(25)
    split = split_labeled(episodes, 0.1, seed=0)
    labeled = [ep for ep in split if ep.labeled]
    assert len(labeled) == 2 and all(ep.action is None for ep in split if not ep.labeled)
    assert [ep.name for ep in split_labeled(episodes, 0.1, seed=0) if ep.labeled] == [ep.name for ep in labeled]
    assert len([ep for ep in split_labeled(episodes[:3], 0.1) if ep.labeled]) == 1  # at least one
    data = Transitions.from_episodes(split)
    assert len(data) == 25 * 20 and data.action.shape == (40, 2) and len(data.labeled) == 40
    np.testing.assert_array_equal(data.obs[data.labeled].numpy(), np.concatenate([ep.obs[:-1] for ep in labeled]))
    for fraction in (0.0, 1.5, -0.1):
        with pytest.raises(OfflineDataError, match="labeled_fraction"):
            split_labeled(episodes, fraction)


def test_unlabeled_actions_cannot_reach_training():
    """Poison the actions of every episode that will be unlabeled: a model trained on the split stays finite."""
    episodes = point_mass_episodes(10)
    keep = {ep.name for ep in split_labeled(episodes, 0.2, seed=0) if ep.labeled}
    poisoned = [ep if ep.name in keep else OfflineEpisode(ep.obs, ep.reward, np.full_like(ep.action, np.nan), ep.name)
                for ep in episodes]
    model = train_state_world_model(Transitions.from_episodes(split_labeled(poisoned, 0.2, seed=0)),
                               StateWorldModelConfig(steps=20, batch_size=32, hidden=32), seed=0)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_action_decoder_recovers_actions_through_the_idm_latent():
    """Labeled on 20 % of the episodes, the model decodes the actions of unlabeled transitions from z = IDM(o, o')."""
    episodes = point_mass_episodes(40)
    split = split_labeled(episodes, 0.2, seed=0)
    model = train_state_world_model(Transitions.from_episodes(split), StateWorldModelConfig(steps=600, batch_size=128, hidden=64,
                                                                                   latent_dim=4), seed=0)
    held = [ep for ep, s in zip(episodes, split) if not s.labeled]
    obs = torch.as_tensor(np.concatenate([ep.obs[:-1] for ep in held]))
    nxt = torch.as_tensor(np.concatenate([ep.obs[1:] for ep in held]))
    truth = np.concatenate([ep.action for ep in held])
    with torch.no_grad():
        x, xn = model.normalize(obs), model.normalize(nxt)
        decoded = model.decode(x, model.idm(torch.cat([x, xn], -1))[0]).numpy()
    r2 = 1 - ((decoded - truth) ** 2).sum() / ((truth - truth.mean(0)) ** 2).sum()
    assert r2 > 0.8, r2
    metrics = model_metrics(model, held)  # the same check, as evals/offline_rl.py reports it
    assert metrics["decoder_r2"] == pytest.approx(r2, abs=1e-4)
    assert metrics["decoder_r2_action_z"] > 0.8 and metrics["dynamics_vs_copy"] < 0.2 and metrics["latent_gain"] > 5
    untrained = train_state_world_model(Transitions.from_episodes(split), StateWorldModelConfig(steps=1, batch_size=8, hidden=8),
                                   seed=0)
    assert model_metrics(untrained, held)["decoder_r2"] < 0.3
    with pytest.raises(OfflineDataError, match="actions"):
        model_metrics(model, [s for s in split if not s.labeled])


def test_decoder_can_read_the_posterior_mean():
    """``decode_mean``: the decoder is trained on the latents' means rather than samples; it still decodes."""
    episodes = point_mass_episodes(40)
    split = split_labeled(episodes, 0.2, seed=0)
    config = StateWorldModelConfig(steps=600, batch_size=128, hidden=64, latent_dim=4, decode_mean=True)
    model = train_state_world_model(Transitions.from_episodes(split), config, seed=0)
    held = [ep for ep, s in zip(episodes, split) if not s.labeled]
    assert model_metrics(model, held)["decoder_r2"] > 0.8


@pytest.mark.parametrize("knob", ["cycle", "pseudo"])
def test_unlabeled_transitions_train_the_decoder_when_asked(knob):
    """``cycle`` (decode the IDM's latent, encode it back through the frozen encoder) and ``pseudo`` (decode it
    towards a supervised IDM's label): on a batch without labels the decoder learns and neither the action
    encoder nor the supervised IDM does; with the knob at 0 such a batch leaves the decoder alone."""
    data = Transitions.from_episodes(split_labeled(point_mass_episodes(8), 0.25, seed=0))
    grads = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        knobs = {"cycle": 0.0, "pseudo": 0.0, knob: weight}  # the other one off
        model = train_state_world_model(data, StateWorldModelConfig(steps=1, batch_size=8, hidden=16, latent_dim=4, **knobs))
        model.zero_grad()
        loss, stats = model.loss(data.obs[:64], data.next_obs[:64], data.reward[:64], labeled=None)
        loss.backward()
        parts = {"decoder": model.action_decoder, "encoder": model.action_encoder, "idm": model.action_idm}
        grads[weight] = {name: sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
                         for name, part in parts.items() if part is not None}
        assert (knob in stats) == (weight > 0)
    assert grads[0.0] == {"decoder": 0.0, "encoder": 0.0}
    assert grads[1.0]["decoder"] > 0 and grads[1.0]["encoder"] == 0.0 and grads[1.0].get("idm", 0.0) == 0.0
    with pytest.raises(ConfigError, match=f"model.{knob}: must be >= 0"):  # a config error naming the key
        StateWorldModelConfig(**{knob: -1.0}).validate()


def test_pseudo_labels_recover_actions_and_the_decoder_still_decodes():
    """With ``pseudo``, the supervised IDM fitted on 20 % of the episodes labels the others' actions, and the
    decoder trained towards those labels decodes them from the IDM's latent (both scored on held-out episodes)."""
    episodes = point_mass_episodes(40)
    split = split_labeled(episodes, 0.2, seed=0)
    config = StateWorldModelConfig(steps=600, batch_size=128, hidden=64, latent_dim=4, pseudo=1.0)
    model = train_state_world_model(Transitions.from_episodes(split), config, seed=0)
    metrics = model_metrics(model, [ep for ep, s in zip(episodes, split) if not s.labeled])
    assert metrics["pseudo_label_r2"] > 0.9 and metrics["decoder_r2"] > 0.8, metrics
    assert "pseudo_label_r2" not in model_metrics(train_state_world_model(
        Transitions.from_episodes(split), StateWorldModelConfig(steps=1, batch_size=8, hidden=8, pseudo=0.0), seed=0),
        episodes[:2])


def test_lambda_returns_and_imagined_rollouts():
    reward = torch.ones(3, 2)
    value = torch.zeros(4, 2)
    np.testing.assert_allclose(lambda_returns(reward, value, 0.5, 1.0)[:, 0].numpy(), [1.75, 1.5, 1.0])
    np.testing.assert_allclose(lambda_returns(reward, value + 2, 0.5, 0.0)[:, 0].numpy(), [2.0, 2.0, 2.0])
    model = train_state_world_model(Transitions.from_episodes(point_mass_episodes(4)),
                               StateWorldModelConfig(steps=5, batch_size=16, hidden=16), seed=0)
    policy, history = train_policy(model, torch.randn(50, 2), PolicyConfig(steps=3, batch_size=8, horizon=4, hidden=16))
    assert len(history) == 2 and policy.act(torch.randn(7, 2)).shape == (7, 2)
    assert (policy.act(torch.randn(7, 2)).abs() <= 1).all()


@pytest.mark.parametrize("execute", ["decoder", "idm"])
def test_latent_policy_beats_random_on_the_point_mass(execute):
    """Executed through the decoder or through the supervised IDM on the model's predicted next state."""
    episodes = split_labeled(point_mass_episodes(60), 0.1, seed=0)
    model = train_state_world_model(Transitions.from_episodes(episodes),
                               StateWorldModelConfig(steps=800, batch_size=128, hidden=64, latent_dim=4), seed=0)
    starts = Transitions.from_episodes(episodes).obs
    policy, _ = train_policy(model, starts, PolicyConfig(steps=400, batch_size=128, hidden=64, horizon=5,
                                                         execute=execute), seed=0)
    rng = np.random.default_rng(1)

    def episode_return(act) -> float:
        obs = torch.as_tensor(rng.uniform(-1, 1, (64, 2)), dtype=torch.float32)
        total = torch.zeros(64)
        for _ in range(20):
            obs = obs + 0.2 * act(obs).clamp(-1, 1)
            total -= obs.norm(dim=1)
        return float(total.mean())

    learned = episode_return(policy.act)
    random = episode_return(lambda o: torch.as_tensor(rng.uniform(-1, 1, o.shape), dtype=torch.float32))
    assert learned > 0.5 * random, (learned, random)  # returns are negative: at most half random's cost


def test_idm_execution_needs_the_supervised_idm():
    data = Transitions.from_episodes(split_labeled(point_mass_episodes(4), 0.5, seed=0))
    without = train_state_world_model(data, StateWorldModelConfig(steps=1, batch_size=8, hidden=8, pseudo=0.0))
    with pytest.raises(OfflineDataError, match="model.pseudo"):
        train_policy(without, data.obs, PolicyConfig(steps=1, batch_size=8, hidden=8, execute="idm"))
    with pytest.raises(OfflineDataError, match="policy.execute"):
        PolicyConfig(execute="planner").validate()
    from lavid.offline_rl.methods import OfflineRLConfig  # the config evals/offline_rl.py checks before any work

    with pytest.raises(OfflineDataError, match="model.pseudo"):
        OfflineRLConfig(StateWorldModelConfig(pseudo=0.0), PolicyConfig(execute="idm")).validate()
    OfflineRLConfig(StateWorldModelConfig(), PolicyConfig(execute="idm")).validate()
    with pytest.raises(OfflineDataError, match="model.pseudo"):  # idm is the default execution
        train_policy(without, data.obs, PolicyConfig(steps=1, batch_size=8, hidden=8))
    policy, _ = train_policy(without, data.obs, PolicyConfig(steps=1, batch_size=8, hidden=8, execute="decoder"))
    with pytest.raises(OfflineDataError, match="model.pseudo"):
        policy.executing("idm")
    with pytest.raises(OfflineDataError, match="execute must be one of"):
        policy.executing("planner")


def test_labeled_only_trains_its_model_for_its_own_step_count():
    from lavid.offline_rl.methods import OfflineRLConfig

    config = OfflineRLConfig(StateWorldModelConfig(steps=30), labeled_only_model_steps=7)
    assert config.model_for("labeled_only").steps == 7 and config.model_for("latent").steps == 30
    assert config.model.steps == 30  # the shared model config is not changed
    assert OfflineRLConfig(StateWorldModelConfig(steps=30)).model_for("labeled_only").steps == 30  # 0: model.steps
    with pytest.raises(ConfigError, match="labeled_only_model_steps: must be >= 0"):
        OfflineRLConfig(labeled_only_model_steps=-1).validate()


def test_one_trained_policy_executes_each_way_with_the_same_weights():
    data = Transitions.from_episodes(split_labeled(point_mass_episodes(8), 0.5, seed=0))
    model = train_state_world_model(data, StateWorldModelConfig(steps=20, batch_size=32, hidden=16))
    policy, _ = train_policy(model, data.obs, PolicyConfig(steps=5, batch_size=16, hidden=16, execute="decoder"),
                             seed=0)
    via_idm = policy.executing("idm")
    assert via_idm.actor is policy.actor and via_idm.model is policy.model and policy.config.execute == "decoder"
    obs = data.obs[:16]
    x = model.normalize(obs)
    with torch.no_grad():
        z = policy.actor(x)[0]
        assert torch.equal(policy.act(obs), model.decode(x, z))
        assert torch.equal(via_idm.act(obs), model.label(x, model.step(x, z)[0]))
    assert not torch.equal(policy.act(obs), via_idm.act(obs))
    prior = PriorPolicy(model, "idm")  # the baseline the actor should beat: the prior's mean, executed alike
    with torch.no_grad():
        assert torch.equal(prior.act(obs), model.label(x, model.step(x, model.prior(x)[0])[0]))
    assert not torch.equal(prior.act(obs), via_idm.act(obs))
    with pytest.raises(OfflineDataError, match="execute must be one of"):
        PriorPolicy(model, "planner")


def test_actor_ema_executes_the_polyak_average_of_the_trained_actor():
    data = Transitions.from_episodes(split_labeled(point_mass_episodes(8), 0.5, seed=0))
    model = train_state_world_model(data, StateWorldModelConfig(steps=20, batch_size=32, hidden=16))
    config = PolicyConfig(steps=30, batch_size=16, hidden=16, actor_ema=0.9)
    torch.manual_seed(0)  # train_policy(seed=0) starts from this actor
    average = {k: v.clone() for k, v in LatentPolicy(model, config).actor.state_dict().items()}
    last = {}

    def follow(step, policy):  # the average by hand, from the weights after each update
        last.update({k: v.detach().clone() for k, v in policy.actor.state_dict().items()})
        for k, v in last.items():
            average[k] += (1 - ema_decay(0.9, step)) * (v - average[k])

    policy, _ = train_policy(model, data.obs, config, seed=0, callback=follow)
    assert [round(ema_decay(0.9, t), 3) for t in (0, 1, 80, 10_000)] == [0.1, 0.182, 0.9, 0.9]
    for k, v in policy.actor.state_dict().items():
        torch.testing.assert_close(v, average[k])
    assert any(not torch.allclose(v, last[k]) for k, v in policy.actor.state_dict().items())  # not the last weights
    plain, _ = train_policy(model, data.obs, replace(config, actor_ema=0.0), seed=0)
    for k, v in plain.actor.state_dict().items():
        torch.testing.assert_close(v, last[k])  # the same run without the average: its last weights
    with pytest.raises(ConfigError, match="policy.actor_ema: must be in"):
        PolicyConfig(actor_ema=1.0).validate()


def test_offline_data_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", state=np.zeros((3, 2)), next_state=np.zeros((3, 2)), action=np.zeros((3, 1)),
             episode=np.zeros(3))
    with pytest.raises(OfflineDataError, match="no reward .offline RL needs rewards"):
        load_offline(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(OfflineDataError, match="cannot read"):
        load_offline(tmp_path / "junk.npz")
    with pytest.raises(OfflineDataError, match="no offline data"):
        load_offline(tmp_path / "missing")
    with pytest.raises(OfflineDataError, match="labeled"):
        train_state_world_model(Transitions.from_episodes(split_labeled(point_mass_episodes(3), 1.0)[:0] or
                                                     [OfflineEpisode(np.zeros((3, 2), np.float32), np.zeros(2, np.float32),
                                                                     None, "x")]),
                           StateWorldModelConfig(steps=1))


def random_replay(path: Path, task: str = "cartpole-balance", episodes: int = 3, action_repeat: int = 8) -> None:
    """A replay.npz of uniform-random episodes, in the format data_prep/train_expert.py writes."""
    env = SimEnv(task, seed=0, action_repeat=action_repeat)
    rng = np.random.default_rng(0)
    buffer = None
    for e in range(episodes):
        state, done, t = env.reset_state(), False, 0
        if buffer is None:
            buffer = ReplayBuffer(state.shape[0], env.action_dim, env.physics.get_state().shape[0], 10_000)
        while not done:
            physics = env.physics.get_state().copy()
            action = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
            reward, done = env.step(action)
            buffer.add(state, action, reward, env.proprio(), physics, e, t)
            state, t = env.proprio(), t + 1
    env.close()
    np.savez(path, **buffer.arrays())


def run_offline_eval(out, *extra):
    return subprocess.run(
        [sys.executable, str(ROOT / "evals/offline_rl.py"), "--task", "cartpole-balance", "--action-repeat", "8",
         "--out", str(out), "--model-steps", "10", "--policy-steps", "10", "--bc-steps", "10", "--seeds", "2",
         "--eval-episodes", "1", "--no-progress", *extra],
        capture_output=True, text=True, timeout=600,
    )


def test_offline_rl_eval_end_to_end_and_resume(tmp_path):
    replay = tmp_path / "replay.npz"
    random_replay(replay)
    assert len(load_offline(replay)) == 3
    out = tmp_path / "eval"
    first = run_offline_eval(out, "--data", str(replay), "--labeled-fraction", "0.34", "--methods", "latent,bc,random",
                             "--score-executions", "decoder,idm", "--workers", "2")  # two processes side by side
    assert first.returncode == 0, first.stderr
    result = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in result["methods"]] == ["latent", "bc", "random"]
    latent = result["methods"][0]
    assert latent["seeds"] == 2 and latent["labeled_transitions"] == 125 and latent["unlabeled_transitions"] == 250
    assert result["methods"][2]["labeled_transitions"] == 0
    assert np.isfinite(latent["latent_gain"]) and latent["decoder_r2"] <= 1 and result["methods"][1]["decoder_r2"] == ""
    assert "latent gain" in (out / "results.md").read_text()
    paired = {g["versus"]: g for g in result["paired"]}  # latent against each baseline, seed by seed
    assert sorted(paired) == ["bc", "random"] and paired["bc"]["seeds"] == [0, 1]
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    score = {(r["method"], r["seed"]): r["score"] for r in rows}
    expected = [round(score["latent", s] - score["bc", s], 2) for s in (0, 1)]
    assert paired["bc"]["diff"] == expected and paired["bc"]["ahead"] == sum(d > 0 for d in expected)
    assert "latent − bc" in (out / "results.md").read_text()
    (execution,) = result["executions"]  # the same latent policies executed through the decoder, against the IDM
    assert execution["method"] == "latent" and execution["execute"] == "decoder" and execution["versus"] == "idm"
    assert all(r["execute_scores"]["idm"] == r["score"] for r in rows if r["method"] == "latent")  # the default
    assert all("execute_scores" not in r for r in rows if r["method"] != "latent")
    decoder_minus_idm = [round(r["execute_scores"]["decoder"] - r["score"], 2) for r in rows if r["method"] == "latent"]
    assert execution["diff"] == decoder_minus_idm and "| latent | decoder |" in (out / "results.md").read_text()
    (actor,) = result["actor_over_prior"]  # each latent policy against its own model's prior mean
    assert actor["method"] == "latent" and actor["seeds"] == [0, 1]
    assert actor["diff"] == [round(r["score"] - r["prior_score"], 2) for r in rows if r["method"] == "latent"]
    assert all("prior_score" not in r for r in rows if r["method"] != "latent")
    assert latent["prior_score_mean"] != "" and result["methods"][1]["prior_score_mean"] == ""
    assert "What the actor added" in (out / "results.md").read_text()
    assert len((out / "runs.jsonl").read_text().splitlines()) == 6
    for name in ("results.md", "results.csv", "curves.png"):
        assert (out / name).exists()
    again = run_offline_eval(out, "--data", str(replay), "--labeled-fraction", "0.34", "--methods", "latent,bc,random")
    assert again.returncode == 0 and "seed 0: score" not in again.stdout  # nothing retrained
    assert len((out / "runs.jsonl").read_text().splitlines()) == 6
    assert json.loads((out / "results.json").read_text())["executions"] == []  # not asked for: not reported
    other = run_offline_eval(out, "--data", str(replay), "--labeled-fraction", "0.34", "--methods", "bc",
                             "--bc-steps", "11", "--workers", "1")  # other settings: retrained, old rows not reported
    assert other.returncode == 0 and "bc seed 1: score" in other.stdout
    assert [r["method"] for r in json.loads((out / "results.json").read_text())["methods"]] == ["bc"]
    wrong = run_offline_eval(tmp_path / "w", "--data", str(replay), "--methods", "bc", "--task", "walker-walk")
    assert wrong.returncode == 2 and "another task" in wrong.stderr
    overridden = run_offline_eval(tmp_path / "s", "--data", str(replay), "--labeled-fraction", "0.34", "--methods", "bc",
                                  "--seeds", "1", "--set", "bc.hidden=8", "model.decode_mean=true")
    assert overridden.returncode == 0, overridden.stderr
    config = json.loads((tmp_path / "s" / "results.json").read_text())["config"]
    assert config["bc"]["hidden"] == 8 and config["model"]["decode_mean"] is True and config["bc"]["steps"] == 10
    assert config["labeled_only_model_steps"] == 10  # --model-steps alone sets both models' steps


def test_offline_rl_eval_rejects_bad_input(tmp_path):
    bad = run_offline_eval(tmp_path / "a", "--data", str(tmp_path / "none.npz"))
    assert bad.returncode == 2 and "no offline data" in bad.stderr
    bad = run_offline_eval(tmp_path / "b", "--data", str(tmp_path / "none.npz"), "--labeled-fraction", "0")
    assert bad.returncode == 2 and "labeled-fraction" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_offline_eval(tmp_path / "c", "--data", str(tmp_path / "none.npz"), "--workers", "0")
    assert bad.returncode == 2 and "--workers must be >= 1" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_offline_eval(tmp_path / "c", "--data", str(tmp_path / "none.npz"), "--device", "cuda:99")
    assert bad.returncode == 2 and "--device cuda:99" in bad.stderr and not (tmp_path / "c").exists()
    bad = run_offline_eval(tmp_path / "d", "--data", str(tmp_path / "none.npz"), "--set", "labeled_only_model_steps=-1")
    assert bad.returncode == 2 and "labeled_only_model_steps: must be >= 0" in bad.stderr
    bad = run_offline_eval(tmp_path / "c", "--methods", "latent,dqn")
    assert bad.returncode == 2 and "dqn" in bad.stderr
    for override, named in (("model.bogus=1", "bogus"), ("policy.horizon=many", "horizon"), ("policy.horizon=0", "horizon"),
                            ("bc.hidden", "SECTION.KEY=VALUE")):
        bad = run_offline_eval(tmp_path / "d", "--set", override)
        assert bad.returncode == 2 and named in bad.stderr and "Traceback" not in bad.stderr, (override, bad.stderr)
        assert not (tmp_path / "d" / "agent").exists()  # stopped before any work
    for extra, named in ((["--score-executions", "decoder,planner"], "planner"),
                         (["--score-executions", "idm", "--set", "model.pseudo=0"], "model.pseudo")):
        bad = run_offline_eval(tmp_path / "e", *extra)
        assert bad.returncode == 2 and named in bad.stderr and "Traceback" not in bad.stderr, (extra, bad.stderr)
        assert not (tmp_path / "e").exists()  # stopped before any work


def test_a_trained_policy_makes_a_dataset_that_offline_rl_reads(tmp_path):
    """train_expert's TorchScript policy -> data_prep/dmc.py's trajectory dataset -> offline episodes."""
    from lavid.data.trajectories import TaskSpec, TrajectoryConfig, build_trajectory_dataset

    env = SimEnv("cartpole-balance", seed=0, action_repeat=8)
    state_dim = env.reset_state().shape[0]
    agent = SAC(state_dim, env.action_dim, SACConfig(hidden=16), seed=0)
    agent.export_policy(str(tmp_path / "medium.pt"), env.action_low, env.action_high)
    env.close()
    config = TrajectoryConfig((TaskSpec("cartpole-balance", 2, episode_len=6),), policy=f"checkpoint:{tmp_path / 'medium.pt'}@0.1",
                              size=16, action_repeat=8, clip_len=4)
    build_trajectory_dataset(str(tmp_path / "data"), config, workers=1, progress=False)
    episodes = load_offline(tmp_path / "data")
    assert len(episodes) == 2
    for ep in episodes:
        assert ep.obs.shape == (6, state_dim) and ep.reward.shape == (5,) and ep.action.shape == (5, 1)
        assert np.isfinite(ep.reward).all() and (np.abs(ep.action) <= 1).all()
    data = Transitions.from_episodes(split_labeled(episodes, 0.5, seed=0))
    assert len(data) == 10 and len(data.labeled) == 5
