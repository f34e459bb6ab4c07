"""The controller, world-model dynamics over real actions, closed-loop control in the simulator, and the
controller's training entry point."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from lavid.planning.controller import Controller, ControllerConfig
from lavid.planning.dynamics import ActionDynamics, pairs
from lavid.planning.fit_controller import ControllerTrainConfig, Sequences, Transitions, fit
from lavid.planning.mpc import GoalCost, RandomAgent, ReplayAgent, run_closed_loop
from lavid.planning.planner import PlannerConfig, plan, seeded_generators, warm_start
from lavid.core.config import ConfigError
from lavid.models.world_model import LatentActionWorldModel, ModelConfig
from test_train import ROOT, TINY, run


def tiny_config(**changes) -> ModelConfig:
    config = ModelConfig()
    config.encoder.arch, config.encoder.img_size, config.encoder.embed_dim, config.encoder.mode = "conv", 32, 16, "e2e"
    config.idm.dim, config.idm.depth, config.predictor.dim, config.predictor.depth = 16, 1, 16, 1
    config.latent.dim = 8
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize("variant", ["mlp", "attention"])
def test_the_controller_learns_a_linear_map_from_actions_to_latents(variant):
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(3, 5, generator=generator)
    actions = torch.rand(600, 3, generator=generator) * 2 - 1
    states = torch.randn(600, 2, 1, 4, generator=generator)
    data = Transitions(actions[:500], states[:500], actions[:500] @ weights)
    controller = Controller(ControllerConfig(variant=variant, dim=32, depth=1, num_heads=2), 3, 4, 1, 5)
    with torch.no_grad():
        before = (controller(actions[500:], states[500:]) - actions[500:] @ weights).pow(2).mean()
    fit(controller, data, ControllerTrainConfig(run="x", steps=400, batch_size=64, lr=3e-3, progress=False))
    with torch.no_grad():
        after = (controller(actions[500:], states[500:]) - actions[500:] @ weights).pow(2).mean()
    variance = (actions[500:] @ weights).var()
    assert after < 0.05 * variance < before


def test_the_attention_controller_uses_the_state_it_acts_in():
    """A latent that depends on the state (z = a · sign(s)) is out of reach for the actions-only variant."""
    generator = torch.Generator().manual_seed(1)
    actions = torch.rand(800, 1, generator=generator) * 2 - 1
    states = torch.randn(800, 2, 1, 2, generator=generator)
    latents = actions * torch.sign(states[:, 1, 0, :1])
    data = Transitions(actions[:700], states[:700], latents[:700])
    errors = {}
    for variant in ("mlp", "attention"):
        torch.manual_seed(0)
        controller = Controller(ControllerConfig(variant=variant, dim=32, depth=1, num_heads=2), 1, 2, 1, 1)
        fit(controller, data, ControllerTrainConfig(run="x", steps=600, batch_size=128, lr=3e-3, progress=False))
        with torch.no_grad():
            errors[variant] = float((controller(actions[700:], states[700:]) - latents[700:]).pow(2).mean())
    assert errors["attention"] < 0.3 * errors["mlp"]


def test_a_controller_that_sees_the_previous_action_fits_a_latent_the_frames_leave_open():
    """z = a_t + a_t−1 (the velocity a held torque leaves): the previous action is needed, and the planner's
    imagination gives it: the executed one at the first step, the sequence's own after it."""
    generator = torch.Generator().manual_seed(3)
    actions, previous = (torch.rand(900, 2, generator=generator) * 2 - 1 for _ in range(2))
    states = torch.randn(900, 2, 1, 4, generator=generator)
    latents = actions + previous
    data = Transitions(actions[:800], states[:800], latents[:800], previous=previous[:800])
    errors = {}
    for sees in (False, True):
        torch.manual_seed(0)
        controller = Controller(ControllerConfig(dim=32, depth=1, num_heads=2, previous_action=sees), 2, 4, 1, 2)
        fit(controller, data, ControllerTrainConfig(run="x", steps=500, batch_size=128, lr=3e-3, progress=False))
        with torch.no_grad():
            errors[sees] = float((controller(actions[800:], states[800:], previous[800:]) - latents[800:])
                                 .pow(2).mean())
    assert errors[True] < 0.2 * errors[False]
    with pytest.raises(ValueError, match="previous actions"):
        controller(actions[:3], states[:3], previous[:2])

    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config()).eval()
    with torch.no_grad():
        for parameter in model.predictor.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    controller = Controller(ControllerConfig(dim=16, depth=1, num_heads=2, previous_action=True), 2, 16, 1,
                            model.cond_dim).eval()
    cached, rerun = ActionDynamics(model, controller, 2), ActionDynamics(model, controller, 2, use_cache=False)
    context = cached.encode(torch.randint(0, 255, (2, 2, 3, 32, 32), dtype=torch.uint8))
    past = cached.observed_conditions(context, torch.rand(2, 1, 2))
    plan_actions, executed = torch.rand(2, 3, 2) * 2 - 1, torch.rand(2, 2) * 2 - 1
    imagined = cached.imagine(context, past, plan_actions, executed)
    torch.testing.assert_close(imagined, rerun.imagine(context, past, plan_actions, executed), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(imagined[:, 0], cached.imagine(context, past, plan_actions)[:, 0])  # None: zeros
    with torch.no_grad():  # the second imagined step sees the first planned action as its previous one
        first = controller(plan_actions[:, 0], pairs(context)[:, -1], executed)
        step = model.predict(context, torch.cat([past, first[:, None]], dim=1))[:, -1:]
        second = controller(plan_actions[:, 1], torch.stack([context[:, -1], step[:, 0]], dim=1), plan_actions[:, 0])
        expected = model.predict(torch.cat([context, step], dim=1),
                                 torch.cat([past, first[:, None], second[:, None]], dim=1))[:, -1]
    torch.testing.assert_close(imagined[:, 1], expected, rtol=1e-4, atol=1e-4)
    goals = torch.randn(2, 1, 16)
    cost = GoalCost(cached, context, past, goals, previous=executed)(plan_actions[:, None], torch.arange(2))
    torch.testing.assert_close(cost[:, 0], (imagined[:, -1] - goals).flatten(1).norm(dim=-1), rtol=1e-4, atol=1e-4)


def test_history_dropout_teaches_the_controller_a_start_in_motion():
    """An episode starts at rest (s_t twice, z = a); later the arm moves (z = a + v, v = s_t − s_t−1 ≈ 2). A plan
    that starts from one image mid-episode sees the rest convention: only history dropout learns its answer."""
    generator = torch.Generator().manual_seed(4)
    count = 1200
    actions = torch.rand(count, 1, generator=generator) * 2 - 1
    now = torch.randn(count, 1, 1, 1, generator=generator)
    velocity = 2 + 0.5 * torch.randn(count, 1, 1, 1, generator=generator)
    start = torch.arange(count) % 10 == 0  # an episode's first step: no motion seen, none before
    velocity[start] = 0
    states = torch.cat([now - velocity, now], dim=1)  # [M, 2, 1, 1]
    latents = actions + velocity[:, 0, 0]
    previous = torch.where(start[:, None], 0.0, torch.rand(count, 1, generator=generator))
    data = Transitions(actions[:1000], states[:1000], latents[:1000], previous=previous[:1000])
    moving = torch.arange(1000, count)[~start[1000:]]
    blind = states[moving, 1:].expand(-1, 2, -1, -1)  # mid-episode, seen without a past
    errors = {}
    for dropout in (0.0, 0.3):
        torch.manual_seed(0)
        controller = Controller(ControllerConfig(dim=32, depth=1, num_heads=2, previous_action=True), 1, 1, 1, 1)
        fit(controller, data, ControllerTrainConfig(run="x", steps=500, batch_size=128, lr=3e-3, progress=False,
                                                    history_dropout=dropout))
        with torch.no_grad():
            errors[dropout] = float((controller(actions[moving], blind) - latents[moving]).pow(2).mean())
    assert errors[0.3] < 0.5 * errors[0.0]
    with pytest.raises(ConfigError, match="history_dropout"):
        ControllerTrainConfig(run="x", history_dropout=1.5).validate()


def test_the_prediction_term_teaches_the_controller_what_the_world_model_needs():
    """Latent targets that are pure noise, next states that a z = a·W explains: only the term through the
    frozen world model can find the z that predicts them."""
    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config()).eval()
    with torch.no_grad():  # a trained predictor listens to z: its zero-initialised gates are not zero any more
        for parameter in model.predictor.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.3)
    generator = torch.Generator().manual_seed(2)
    actions = torch.rand(700, 3, generator=generator) * 2 - 1
    states = torch.randn(700, 2, 1, 16, generator=generator)
    with torch.no_grad():
        following = model.predict(states[:, 1:], (actions @ torch.randn(3, 8, generator=generator))[:, None])[:, 0]
    noise = torch.randn(700, 8, generator=generator)
    data = Transitions(actions[:600], states[:600], noise[:600], following[:600])
    errors = {}
    for weight in (0.0, 20.0):
        torch.manual_seed(0)
        controller = Controller(ControllerConfig(variant="mlp", dim=32, depth=1), 3, 16, 1, 8)
        fit(controller, data, ControllerTrainConfig(run="x", steps=300, batch_size=64, lr=3e-3, progress=False,
                                                    prediction_weight=weight), model)
        with torch.no_grad():
            predicted = model.predict(states[600:, 1:], controller(actions[600:], states[600:])[:, None])[:, 0]
            errors[weight] = float((predicted - following[600:]).pow(2).mean())
    assert errors[20.0] < 0.5 * errors[0.0]
    with pytest.raises(ValueError, match="world model"):
        fit(controller, Transitions(actions, states, noise), ControllerTrainConfig(run="x", prediction_weight=1.0))


def make_sequences(episodes: int, length: int, horizon: int, generator: torch.Generator):
    """Episodes of a point p_t+1 = p_t + a_t seen as states ``[p_t, noise]``, with latents z_t = a_t · p_t: from a
    window's start, the latent of its step k needs where the earlier actions have moved the point."""
    from lavid.planning.fit_controller import Sequences

    actions = torch.rand(episodes, length, 1, generator=generator) * 2 - 1
    position = torch.rand(episodes, 1, 1, generator=generator) * 4 - 2 + torch.cumsum(actions, 1) - actions
    states = torch.cat([position, torch.randn(episodes, length, 1, generator=generator)], dim=-1)[:, :, None]
    first = (torch.arange(episodes)[:, None] * length).expand(-1, length).flatten()
    starts = (torch.arange(episodes)[:, None] * length + torch.arange(length - horizon)).flatten()
    return Sequences(states.flatten(0, 1), actions.flatten(0, 1), (actions * position).flatten(0, 1), first, starts,
                     horizon)


def test_the_sequence_controller_maps_a_plan_from_its_start_causally():
    """The sequence controller learns z_k of :func:`make_sequences` from each window's observed start alone; a
    latent never depends on a later action; it trains on :class:`Sequences` only, with its own config errors."""
    generator = torch.Generator().manual_seed(2)
    H = 4
    data, held = make_sequences(200, 20, H, generator), make_sequences(40, 20, H, generator)
    torch.manual_seed(0)
    config = ControllerConfig(variant="sequence", dim=32, depth=2, num_heads=2, horizon=H)
    controller = Controller(config, 1, 2, 1, 1)
    observed, actions, latents = held.batch(torch.arange(len(held.starts)))
    with torch.no_grad():
        before = (controller(actions, observed) - latents).pow(2).mean()
    fit(controller, data, ControllerTrainConfig(run="x", steps=800, batch_size=128, lr=3e-3, progress=False,
                                                controller=controller.config))
    with torch.no_grad():
        predicted = controller(actions, observed)
        changed = actions.clone()
        changed[:, 2:] = -changed[:, 2:]
        other = controller(changed, observed)
    after = (predicted - latents).pow(2).mean(dim=(0, 2))  # per step of the window
    assert after.max() < 0.1 * latents.var() and after.mean() < 0.1 * before
    assert torch.equal(predicted[:, :2], other[:, :2]) and not torch.allclose(predicted[:, 2:], other[:, 2:])
    with pytest.raises(ValueError, match="horizon"):
        controller(torch.zeros(2, H + 1, 1), observed[:2])
    with pytest.raises(ValueError, match="trains on Sequences"):
        fit(controller, Transitions(actions[:, 0], observed, latents[:, 0]),
            ControllerTrainConfig(run="x", steps=1, progress=False))
    with pytest.raises(ConfigError, match="controller.previous_action"):
        ControllerConfig(variant="sequence", previous_action=True).validate("controller")
    with pytest.raises(ConfigError, match="controller.dropout"):
        ControllerConfig(dropout=1.0).validate("controller")
    # dropout regularizes the fit only: in training two calls differ, in eval mode (planning) they agree
    noisy = Controller(ControllerConfig(variant="sequence", dim=32, depth=2, num_heads=2, horizon=H, dropout=0.5),
                       1, 2, 1, 1)
    with torch.no_grad():
        assert not torch.equal(noisy(actions, observed), noisy(actions, observed))
        noisy.eval()
        assert torch.equal(noisy(actions, observed), noisy(actions, observed))
    for bad in ({"prediction_weight": 1.0}, {"imagined_rounds": 1}, {"eval_frames": 10}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ControllerTrainConfig(run="x", controller=ControllerConfig(variant="sequence"), **bad).validate()


def test_sequences_cut_windows_inside_episodes():
    from lavid.planning.fit_controller import Sequences

    states = torch.arange(10.0)[:, None, None]  # two episodes: steps 0-5 and 6-9
    first = torch.tensor([0] * 6 + [6] * 4)
    data = Sequences(states, torch.arange(10.0)[:, None], -torch.arange(10.0)[:, None], first,
                     torch.tensor([0, 1, 2, 6]), 3)
    observed, actions, latents = data.batch(torch.tensor([0, 2, 3]))
    assert observed[:, :, 0, 0].tolist() == [[0, 0], [1, 2], [6, 6]]  # an episode's first step: itself twice
    assert actions[..., 0].tolist() == [[0, 1, 2], [2, 3, 4], [6, 7, 8]]
    assert latents[..., 0].tolist() == [[0, -1, -2], [-2, -3, -4], [-6, -7, -8]]


def test_pseudo_labels_read_the_action_back_from_the_latent_and_join_as_episodes_of_their_own():
    """On :func:`make_sequences` (z_t = a_t · p_t, p_t in the state) the action decoder recovers a_t from (z_t, s_t)
    on episodes it never saw; pseudo-labeled episodes keep their states and latents, get the decoder's actions
    clipped to the labeled range on their transitions, and are appended with their windows inside them."""
    from lavid.planning.fit_controller import fit_action_decoder, pseudo_label

    generator = torch.Generator().manual_seed(4)
    labeled, unlabeled = make_sequences(60, 12, 4, generator), make_sequences(10, 12, 4, generator)
    torch.manual_seed(0)
    decoder, r2 = fit_action_decoder(labeled, steps=600)
    assert r2 > 0.8
    low, high = torch.full((1,), -0.5), torch.full((1,), 0.5)
    labeled_again = pseudo_label(unlabeled, decoder, low, high)
    rows = unlabeled.transitions
    assert len(rows) == 10 * 11 and not (rows % 12 == 11).any()  # every step but each episode's last
    assert torch.equal(labeled_again.states, unlabeled.states) and torch.equal(labeled_again.latents, unlabeled.latents)
    assert labeled_again.actions[rows].abs().max() <= 0.5 and labeled_again.actions[11].item() == 0.0
    inside = (unlabeled.actions[rows].abs() < 0.4).flatten()  # the decoder's accuracy where clipping does not act
    error = (labeled_again.actions[rows] - unlabeled.actions[rows]).flatten()[inside].pow(2).mean()
    assert error < 0.2 * unlabeled.actions[rows].flatten()[inside].var()
    both = labeled.concat(labeled_again)
    assert len(both.starts) == len(labeled.starts) + len(unlabeled.starts)
    observed, actions, latents = both.batch(torch.tensor([len(labeled.starts)]))  # the first pseudo-labeled window
    assert torch.equal(observed[0, 1], unlabeled.states[0]) and torch.equal(latents[0], unlabeled.latents[:4])


def test_the_sequence_controllers_imagination_reads_only_the_observed_states():
    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config(action_dim=2)).eval()
    controller = Controller(ControllerConfig(variant="sequence", dim=16, depth=1, num_heads=2), 2,
                            model.encoder.dim, model.encoder.num_tokens, model.cond_dim).eval()
    states = torch.randn(3, 2, model.encoder.num_tokens, model.encoder.dim)
    past, actions = torch.randn(3, 1, model.cond_dim), torch.rand(3, 5, 2) * 2 - 1
    for cached in (True, False):
        imagined = ActionDynamics(model, controller, 2, use_cache=cached).imagine(states, past, actions)
        with torch.no_grad():
            latents = controller(actions, states)
            expected = model.rollout(states, torch.cat([past, latents], dim=1))
        torch.testing.assert_close(imagined, expected, rtol=1e-5, atol=1e-5)
    one = ActionDynamics(model, controller, 2).imagine(states[:, 1:], past[:, :0], actions)
    with torch.no_grad():
        expected = model.rollout(states[:, 1:], controller(actions, states[:, [1, 1]]))
    torch.testing.assert_close(one, expected, rtol=1e-5, atol=1e-5)


def test_pairs_put_each_step_beside_the_one_before():
    states = torch.arange(3.0).view(1, 3, 1, 1)
    paired = pairs(states)
    assert paired.shape == (1, 3, 2, 1, 1)
    assert paired[0, :, :, 0, 0].tolist() == [[0, 0], [0, 1], [1, 2]]


def test_dynamics_reject_a_mismatched_action_size_and_a_missing_controller():
    action_model = LatentActionWorldModel(tiny_config(condition="action", action_dim=2)).eval()
    with pytest.raises(ValueError, match="another embodiment"):
        ActionDynamics(action_model, None, action_dim=3)
    latent_model = LatentActionWorldModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="needs a controller"):
        ActionDynamics(latent_model, None, action_dim=2)
    controller = Controller(ControllerConfig(dim=16, depth=1, num_heads=2), 2, 16, 1, latent_model.cond_dim)
    with pytest.raises(ValueError, match="another embodiment"):
        ActionDynamics(latent_model, controller, action_dim=4)


@pytest.mark.parametrize("condition", ["latent", "action"])
@pytest.mark.parametrize("observed", [1, 3])
def test_imagination_over_the_kv_cache_matches_rerunning_and_plans_the_same(condition, observed):
    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config(condition=condition, action_dim=2)).eval()
    with torch.no_grad():  # a predictor that listens to its conditions and history
        for parameter in model.predictor.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    controller = None
    if condition == "latent":
        controller = Controller(ControllerConfig(dim=16, depth=1, num_heads=2), 2, 16, 1, model.cond_dim).eval()
    cached, rerun = ActionDynamics(model, controller, 2), ActionDynamics(model, controller, 2, use_cache=False)
    frames = torch.randint(0, 255, (2, observed, 3, 32, 32), dtype=torch.uint8)
    states = cached.encode(frames)
    past = cached.observed_conditions(states, torch.rand(2, observed - 1, 2))
    actions = torch.rand(2, 4, 2) * 2 - 1
    imagined = cached.imagine(states, past, actions)
    torch.testing.assert_close(imagined, rerun.imagine(states, past, actions), rtol=1e-5, atol=1e-5)
    assert imagined.shape == (2, 4, 1, 16) and not torch.allclose(imagined[:, 0], imagined[:, -1])
    goals = cached.encode(torch.randint(0, 255, (2, 1, 3, 32, 32), dtype=torch.uint8))[:, 0]
    low, high = -torch.ones(2), torch.ones(2)
    for method in ("cem", "mppi"):
        config = PlannerConfig(method=method, samples=24, elites=4, iterations=3, horizon=4)
        plans = [plan(GoalCost(d, states, past, goals), low, high, config, seeded_generators(range(2)))
                 for d in (cached, rerun)]
        torch.testing.assert_close(plans[0].actions, plans[1].actions, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("condition", ["latent", "action"])
def test_bfloat16_imagination_stays_near_float32_and_returns_float32(condition):
    """``precision="bfloat16"`` runs the predictor (and controller) under autocast: float32 states come back, within
    bfloat16's rounding of the float32 ones and much closer to them than to another action's; a precision that
    does not exist is an error naming it."""
    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config(condition=condition, action_dim=2)).eval()
    with torch.no_grad():
        for parameter in model.predictor.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    controller = None
    if condition == "latent":
        controller = Controller(ControllerConfig(dim=16, depth=1, num_heads=2), 2, 16, 1, model.cond_dim).eval()
        with torch.no_grad():  # latents that differ with the action as much as the IDM's do
            controller.head.weight.mul_(10)
    exact, rounded = ActionDynamics(model, controller, 2), ActionDynamics(model, controller, 2, precision="bfloat16")
    states = exact.encode(torch.randint(0, 255, (3, 2, 3, 32, 32), dtype=torch.uint8))
    past = exact.observed_conditions(states, torch.rand(3, 1, 2))
    actions = torch.rand(3, 4, 2) * 2 - 1
    reference, approximate = exact.imagine(states, past, actions), rounded.imagine(states, past, actions)
    assert approximate.dtype == torch.float32 and approximate.shape == reference.shape
    error = (approximate - reference).norm() / reference.norm()
    other = (exact.imagine(states, past, -actions) - reference).norm() / reference.norm()
    assert 0 < error < 0.05 and error < other / 5
    with pytest.raises(ValueError, match="got 'float16'"):
        ActionDynamics(model, controller, 2, precision="float16")


def test_the_goal_cost_of_a_batch_equals_the_cost_of_each_episode_alone():
    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config()).eval()
    controller = Controller(ControllerConfig(dim=16, depth=1, num_heads=2), 2, 16, 1, model.cond_dim).eval()
    dynamics = ActionDynamics(model, controller, 2)
    frames = torch.randint(0, 255, (3, 3, 3, 32, 32), dtype=torch.uint8)
    states = dynamics.encode(frames)
    past = dynamics.observed_conditions(states, torch.rand(3, 2, 2))
    goals = dynamics.encode(torch.randint(0, 255, (3, 1, 3, 32, 32), dtype=torch.uint8))[:, 0]
    cost = GoalCost(dynamics, states, past, goals)
    actions = torch.rand(3, 5, 4, 2) * 2 - 1
    together = cost(actions, torch.arange(3))
    alone = torch.cat([cost(actions[e:e + 1], torch.tensor([e])) for e in range(3)])
    assert together.shape == (3, 5)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert together.std() > 0  # the candidates differ, and so do their costs


class PointMass:
    """A toy simulator with SimEnv's interface: a point in the plane moved by its action."""

    action_dim = 2
    action_repeat = 1
    action_low = np.full(2, -1.0, np.float32)
    action_high = np.full(2, 1.0, np.float32)

    def __init__(self, start):
        self.position = np.asarray(start, np.float32)

    def step(self, action, trace=None):
        self.position = self.position + 0.25 * np.clip(action, -1, 1)
        if trace is not None:
            trace.append(self.qpos())
        return 0.0, False

    def qpos(self):
        return self.position.astype(np.float64)

    def render(self):
        return np.zeros((3, 4, 4), np.uint8)

    def effector(self):
        return self.position.copy()


class PerfectModelAgent:
    """MPC with the toy's own dynamics as the model: CEM through ``position + 0.25 · Σ actions``, costing the
    distance at every planned step (with the last step's alone, any detour that ends at the goal ties)."""

    def __init__(self, envs, goals):
        self.envs, self.goals = envs, torch.as_tensor(goals)
        self.config = PlannerConfig(samples=64, elites=8, iterations=4, horizon=3)
        self.generators = seeded_generators(range(len(envs)))
        self.low, self.high = torch.full((2,), -1.0), torch.full((2,), 1.0)
        self.mean = None

    def act(self, frames, actions):
        start = torch.as_tensor(np.stack([env.position for env in self.envs]))

        def cost(candidates, episodes):
            path = start[episodes][:, None, None] + 0.25 * candidates.cumsum(dim=2)  # [E, K, H, 2]
            return (path - self.goals[episodes][:, None, None]).norm(dim=-1).sum(dim=-1)

        result = plan(cost, self.low, self.high, self.config, self.generators, mean=self.mean)
        self.mean = warm_start(result.mean, self.low, self.high)
        return result.actions[:, 0].numpy()


def test_closed_loop_planning_with_a_perfect_model_reaches_the_goal():
    starts = np.array([[0.0, 0.0], [1.0, -1.0], [-0.5, 0.5]], np.float32)
    goals = np.array([[1.0, 1.0], [0.0, 0.0], [-1.5, -0.5]], np.float32)
    envs = [PointMass(s) for s in starts]
    episodes = run_closed_loop(envs, PerfectModelAgent(envs, goals), steps=12, progress=False)
    assert episodes.frames.shape == (3, 13, 3, 4, 4) and episodes.actions.shape == (3, 12, 2)
    final = np.linalg.norm(episodes.effector[:, -1] - goals, axis=-1)
    assert (final < 0.1).all(), final  # from 1.4 away
    random = [PointMass(s) for s in starts]
    wandering = run_closed_loop(random, RandomAgent(PointMass.action_low, PointMass.action_high, 0), 12, progress=False)
    assert np.linalg.norm(wandering.effector[:, -1] - goals, axis=-1).mean() > 0.3


@pytest.fixture(scope="module")
def reacher_goals(tmp_path_factory):
    """Two smooth reacher-easy episodes of 7 stored steps at 32 px, recorded by data_prep/dmc.py."""
    out = tmp_path_factory.mktemp("goals") / "reacher"
    subprocess.run([sys.executable, str(ROOT / "data_prep" / "dmc.py"), "--task", "reacher-easy", "--episodes", "2",
                    "--episode-len", "7", "--clip-len", "4", "--size", "32", "--action-repeat", "4", "--workers", "0",
                    "--seed", "5", "--out", str(out), "--no-progress"], check=True, capture_output=True, timeout=300)
    return out


def test_replaying_the_stored_actions_reaches_the_stored_goal_exactly(reacher_goals):
    from lavid.planning.reaching import load_goals, reaching_metrics, start_envs

    goals = load_goals(reacher_goals, "reacher-easy", episodes=2, goal_step=6)
    assert goals.oracle_actions.shape == (2, 6, 2) and goals.goal_frames.shape == (2, 3, 32, 32)
    envs = start_envs(goals, action_repeat=4)
    episodes = run_closed_loop(envs, ReplayAgent(goals.oracle_actions), steps=6, progress=False)
    # the restored start shows what was recorded, the target included (placed by the episode's task seed)
    np.testing.assert_array_equal(episodes.frames[:, 0], goals.start_frames)
    np.testing.assert_array_equal(episodes.frames[:, -1], goals.goal_frames)
    metrics = reaching_metrics(episodes.effector, goals, threshold=0.02)
    assert metrics["final_distance_mean"] < 1e-6 and metrics["success_rate"] == 1.0
    assert metrics["start_distance_mean"] > 0.01  # the goal was somewhere else


def test_goals_from_another_task_are_an_error(sim_data):
    from lavid.planning.reaching import load_goals

    with pytest.raises(ValueError, match="not only reacher-easy"):
        load_goals(sim_data, "reacher-easy", episodes=1, goal_step=2)
    with pytest.raises(ValueError, match="fewer than goal_step"):
        load_goals(sim_data, "cartpole-swingup", episodes=1, goal_step=40)


@pytest.fixture(scope="module")
def latent_run(sim_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ctrlrun") / "run"
    run(*TINY, f"data={sim_data}", f"out_dir={out}", "steps=3", "eval_every=0", "model.latent.family=noisy",
        "probe_episodes=0", "data.holdout_fraction=0.3")
    return out


def test_train_controller_fits_saves_and_reloads_with_a_few_labels(latent_run, tmp_path):
    from lavid.planning.fit_controller import load_controller, train_controller

    out = tmp_path / "controller"
    summary = train_controller(ControllerTrainConfig(run=str(latent_run), out_dir=str(out), labeled_fraction=0.25,
                                                     steps=20, batch_size=16, eval_frames=4, progress=False,
                                                     controller=ControllerConfig(dim=16, depth=1, num_heads=2)))
    # 6 cartpole episodes of 16 steps, 4 held out at 0.3 ... at least one labeled, never all
    assert summary["labeled_transitions"] == 15 * summary["labeled_episodes"]
    assert summary["labeled_transitions"] < summary["training_transitions"]
    assert summary["losses"][-1] < summary["losses"][0]
    for key in ("latent_r2", "latent_r2_fit", "rollout_ratio", "action_gain", "one_step_ratio"):
        assert np.isfinite(summary[key])
    controller, run_dir = load_controller(out)
    assert controller.action_dim == 1 and run_dir == str(latent_run.resolve())


def test_imagined_transitions_are_what_the_controller_meets_in_a_plan():
    """From one frame: every step of the window, the first as a plan's first view (s_0 twice, no a_−1), the
    rest on the model's own predictions; from two: the steps after the observed one. Targets are the IDM's
    latents and the next true frames of the same steps."""
    from lavid.planning.fit_controller import imagined_transitions

    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config()).eval()
    controller = Controller(ControllerConfig(dim=16, depth=1, num_heads=2, previous_action=True), 2,
                            model.encoder.dim, model.encoder.num_tokens, model.cond_dim).eval()
    W, T = 3, 5
    states = torch.randn(W, T, model.encoder.num_tokens, model.encoder.dim)
    actions, latents = torch.rand(W, T - 1, 2) * 2 - 1, torch.randn(W, T - 1, model.cond_dim)
    got = imagined_transitions(model, controller, (states, actions, latents), chunk=2)
    assert len(got.actions) == W * ((T - 1) + (T - 3))
    whole = imagined_transitions(model, controller, (states, actions, latents), chunk=W)  # chunks change nothing
    torch.testing.assert_close(whole.states, got.states)
    one = slice(0, W * (T - 1))  # from one frame, window-major: [W, T-1]
    seen = got.states[one].view(W, T - 1, 2, *states.shape[2:])
    assert torch.equal(seen[:, 0, 0], states[:, 0]) and torch.equal(seen[:, 0, 1], states[:, 0])
    assert not got.previous[one].view(W, T - 1, 2)[:, 0].any()
    assert torch.equal(got.previous[one].view(W, T - 1, 2)[:, 1:], actions[:, :-1])
    imagined = ActionDynamics(model, controller, 2).imagine(states[:, :1], latents[:, :0], actions)
    torch.testing.assert_close(seen[:, 1:, 1], imagined[:, :-1])
    torch.testing.assert_close(seen[:, 2:, 0], imagined[:, :-2])
    assert not torch.allclose(seen[:, 1:, 1], states[:, 1:-1])  # predictions, not the true frames
    assert torch.equal(got.latents[one].view(W, T - 1, -1), latents)
    assert torch.equal(got.following[one].view(W, T - 1, *states.shape[2:]), states[:, 1:])
    two = got.states[W * (T - 1):].view(W, T - 3, 2, *states.shape[2:])
    assert torch.equal(two[:, 0, 0], states[:, 1])  # the observed frame, then the first prediction
    assert torch.equal(got.latents[W * (T - 1):].view(W, T - 3, -1), latents[:, 2:])
    with pytest.raises(ConfigError, match="imagined_rounds"):
        ControllerTrainConfig(run="x", imagined_rounds=-1).validate()


def test_controller_ceiling_reads_the_latent_from_each_input_set(latent_run, tmp_path):
    """benchmarks/controller_ceiling.py: one held-out R² per input set and labeled share, on the run's own split
    (what the readout finds is tested on a latent of known form below)."""
    import json

    from benchmarks import controller_ceiling

    out = tmp_path / "ceiling"
    assert controller_ceiling.main(["--run", str(latent_run), "--fractions", "0.5", "1.0", "--hidden", "32",
                                    "--max-steps", "300", "--out", str(out)]) == 0
    rows = json.loads((out / "controller_ceiling.json").read_text())["rows"]
    assert len(rows) == 2 * len(controller_ceiling.INPUTS)
    half, every = (next(r["transitions"] for r in rows if r["fraction"] == f) for f in (0.5, 1.0))
    assert 0 < half < every  # half the training episodes, drawn as the controller's labels
    assert all(np.isfinite(r["r2"]) and r["r2"] <= 1 for r in rows)
    assert "| a_t |" in (out / "controller_ceiling.md").read_text()
    with pytest.raises(SystemExit):  # a clear usage error, not a traceback
        controller_ceiling.main(["--run", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        controller_ceiling.main(["--run", str(latent_run), "--fractions", "0"])


def test_the_controller_ceiling_reads_a_latent_that_needs_state_and_action_only_from_both():
    """z = the action turned by the state (as a joint's effect on the picture depends on the pose): the readout
    finds it from (s_t, a_t), not from either alone."""
    from benchmarks.controller_ceiling import read_latent

    generator = torch.Generator().manual_seed(0)

    def part(count):
        angle = torch.rand(count, 1, generator=generator) * 6.28
        action = torch.rand(count, 1, generator=generator) * 2 - 1
        return {"s": torch.cat([angle.cos(), angle.sin()], 1), "a": action,
                "z": torch.cat([angle.cos() * action, angle.sin() * action], 1)}

    fit_part, test_part = part(2000), part(500)
    both, _ = read_latent(fit_part, test_part, ("s", "a"), hidden=64, max_steps=3000)
    action, _ = read_latent(fit_part, test_part, ("a",), hidden=64, max_steps=3000)
    state, _ = read_latent(fit_part, test_part, ("s",), hidden=64, max_steps=3000)
    assert both > 0.9 and action < 0.1 and state < 0.1


def test_train_controller_fits_a_sequence_controller(latent_run, tmp_path):
    from lavid.planning.fit_controller import load_controller, train_controller

    out = tmp_path / "sequence"
    summary = train_controller(ControllerTrainConfig(
        run=str(latent_run), out_dir=str(out), labeled_fraction=0.25, steps=20, batch_size=16, eval_frames=4,
        progress=False, controller=ControllerConfig(variant="sequence", dim=16, depth=1, num_heads=2, horizon=4)))
    assert summary["labeled_transitions"] == 15 * summary["labeled_episodes"]
    assert summary["losses"][-1] < summary["losses"][0]
    for key in ("latent_r2", "latent_r2_fit", "rollout_ratio", "action_gain", "one_step_ratio"):
        assert np.isfinite(summary[key])
    controller, _ = load_controller(out)
    assert controller.sequential and controller.config.horizon == 4
    assert summary["pseudo_labeled_episodes"] == 0 and summary["action_decoder_r2"] is None
    pseudo = train_controller(ControllerTrainConfig(
        run=str(latent_run), out_dir=str(tmp_path / "pseudo"), labeled_fraction=0.5, pseudo_labeled_fraction=0.5,
        steps=20, batch_size=16, eval_frames=4, progress=False,
        controller=ControllerConfig(variant="sequence", dim=16, depth=1, num_heads=2, horizon=4)))
    assert pseudo["labeled_transitions"] == 15 * pseudo["labeled_episodes"]  # the true actions seen: not the pseudo
    assert pseudo["pseudo_labeled_episodes"] == pseudo["labeled_episodes"] >= 2
    assert pseudo["action_decoder_r2"] is not None and np.isfinite(pseudo["rollout_ratio"])
    with pytest.raises(ConfigError, match="pseudo_labeled_fraction"):
        ControllerTrainConfig(run="x", labeled_fraction=0.5, pseudo_labeled_fraction=0.6,
                              controller=ControllerConfig(variant="sequence")).validate()
    with pytest.raises(ConfigError, match="pseudo_labeled_fraction"):
        ControllerTrainConfig(run="x", pseudo_labeled_fraction=0.2).validate()  # the attention controller


def test_validation_keeps_the_controller_from_learning_its_few_labels_by_heart():
    """Few noisy labels of a linear map: fit long, the controller learns the noise; checked on held-back
    transitions, the weights from before that are kept (and they predict the held-back ones best)."""
    from lavid.planning.fit_controller import validation_error

    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(3, 5, generator=generator)
    actions = torch.rand(296, 3, generator=generator) * 2 - 1
    states = torch.zeros(296, 2, 1, 4)
    latents = actions @ weights
    noisy = latents[:40] + 0.7 * torch.randn(40, 5, generator=generator)  # 40 labels, noisy
    data, held = Transitions(actions[:40], states[:40], noisy), Transitions(actions[40:], states[40:], latents[40:])
    config = ControllerTrainConfig(run="x", steps=1500, batch_size=40, lr=3e-3, weight_decay=0.0, progress=False,
                                   validation_every=25)

    def fitted(validation):
        torch.manual_seed(0)
        controller = Controller(ControllerConfig(variant="mlp", dim=128, depth=3), 3, 4, 1, 5)
        _, kept = fit(controller, data, config, validation=validation)
        return controller, kept

    last, none = fitted(None)
    early, kept = fitted(held)
    assert none is None and 25 <= kept["step"] < config.steps
    assert validation_error(early, held) == pytest.approx(kept["error"], rel=1e-5)  # the kept weights are loaded
    assert kept["error"] < 0.5 * validation_error(last, held)  # measured: about 0.1x
    with pytest.raises(ValueError, match="kind"):
        fit(fitted(None)[0], data, config, validation=Sequences(states[:, 0], actions, latents,
                                                                 torch.zeros(296, dtype=torch.long),
                                                                 torch.arange(4), 2))


def test_train_controller_holds_back_labeled_episodes_to_choose_its_step(latent_run, tmp_path):
    from lavid.planning.fit_controller import train_controller

    common = dict(run=str(latent_run), labeled_fraction=0.5, steps=20, batch_size=16, eval_frames=4, progress=False,
                  controller=ControllerConfig(variant="sequence", dim=16, depth=1, num_heads=2, horizon=4))
    plain = train_controller(ControllerTrainConfig(out_dir=str(tmp_path / "plain"), **common))
    checked = train_controller(ControllerTrainConfig(out_dir=str(tmp_path / "checked"), validation_fraction=0.5,
                                                     validation_every=5, **common))
    assert plain["validation_episodes"] == 0 and plain["kept_step"] is None
    assert checked["validation_episodes"] >= 1
    # the held-back episodes are labeled all the same: the same labels, fewer of them fit
    assert checked["labeled_episodes"] == plain["labeled_episodes"] >= 2
    assert checked["labeled_transitions"] == plain["labeled_transitions"]
    assert checked["kept_step"] in (5, 10, 15, 20) and np.isfinite(checked["validation_error"])
    with pytest.raises(ValueError, match=">= 2 labeled episodes"):
        train_controller(ControllerTrainConfig(out_dir=str(tmp_path / "one"), **{**common, "labeled_fraction": 0.01},
                                               validation_fraction=0.5))
    with pytest.raises(ConfigError, match="validation_fraction"):
        ControllerTrainConfig(run="x", validation_fraction=1.0).validate()


def test_train_controller_with_an_imagined_round(latent_run, tmp_path):
    from lavid.planning.fit_controller import train_controller

    summary = train_controller(ControllerTrainConfig(run=str(latent_run), out_dir=str(tmp_path / "c"),
                                                     labeled_fraction=0.25, steps=10, batch_size=16, eval_frames=4,
                                                     imagined_rounds=1, progress=False,
                                                     controller=ControllerConfig(dim=16, depth=1, num_heads=2)))
    assert summary["labeled_transitions"] == 15 * summary["labeled_episodes"]  # the labels, not the imagined
    assert len(summary["losses"]) == 2 * 2  # two fits of 10 steps: a loss at step 0 and at the last of each
    assert np.isfinite(summary["rollout_ratio"])


def test_the_controller_cli_names_bad_values_and_missing_runs(tmp_path):
    script = ROOT / "lavid" / "train_controller.py"
    bad = subprocess.run([sys.executable, str(script), "run=somewhere", "labeled_fraction=0"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "labeled_fraction" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, str(script), f"run={tmp_path / 'none'}"], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_controller_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="controller.num_heads"):
        Controller(ControllerConfig(dim=10, num_heads=3), 2, 4, 1, 3)


def test_evals_plan_compares_every_method_and_writes_its_results(sim_data, latent_run, tmp_path):
    """evals/plan.py end to end on tiny trained runs: goal episodes recorded at the data's size, the
    controller fit, every method run from the same starts, the result files written; bad input is one line."""
    import csv
    import json

    action_run = tmp_path / "action"
    run(*TINY, f"data={sim_data}", f"out_dir={action_run}", "steps=2", "eval_every=0", "model.condition=action",
        "probe_episodes=0", "data.holdout_fraction=0.3")
    script, out = ROOT / "evals" / "plan.py", tmp_path / "plan"
    common = ["--train-data", str(sim_data), "--latent-runs", str(latent_run), "--action-run", str(action_run),
              "--episodes", "2", "--goal-steps", "3", "--samples", "8", "--elites", "2", "--iterations", "2",
              "--controller-steps", "5", "--preset", "goal_episodes", "--no-progress"]
    done = subprocess.run([sys.executable, str(script), "--task", "cartpole-swingup", "--out", str(out), *common],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["method"] for r in rows] == ["latent noisy β 0.001 + controller", "action-conditioned world model",
                                           "random actions", "oracle: replay the stored actions"]
    oracle = rows[-1]
    assert float(oracle["final_distance_mean"]) < 1e-6 and float(oracle["start_distance_mean"]) > 0
    assert int(rows[0]["labeled_transitions"]) < int(rows[1]["labeled_transitions"])
    assert json.loads((out / "results.json").read_text())["rows"][2]["method"] == "random actions"
    assert "| oracle: replay the stored actions |" in (out / "results.md").read_text()
    assert len(list(out.glob("*.gif"))) == 4
    wrong = subprocess.run([sys.executable, str(script), "--task", "reacher-easy", "--out", str(tmp_path / "w"),
                            *common], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "no reacher-easy trajectories" in wrong.stderr
    assert "Traceback" not in wrong.stderr


# ------------------------------------------------------------------------ the anchors' planning protocol


def test_pairs_from_held_out_episodes_and_the_success_criterion(reacher_goals):
    from lavid.planning.reaching import draw_pairs, qpos_success, start_envs, wilson_interval

    pairs = draw_pairs(reacher_goals, "reacher-easy", pairs=5, offset=3, seed=1)
    again = draw_pairs(reacher_goals, "reacher-easy", pairs=5, offset=3, seed=1)
    np.testing.assert_array_equal(pairs.goal_frames, again.goal_frames)  # seeded
    assert pairs.oracle_actions.shape == (5, 3, 2) and pairs.goal_qpos.shape == (5, 2)
    envs = start_envs(pairs, action_repeat=4)
    replayed = run_closed_loop(envs, ReplayAgent(pairs.oracle_actions), steps=3, progress=False)
    assert replayed.qpos.shape == (5, 1 + 3 * 4, 2)  # every control step, the start included
    np.testing.assert_allclose(replayed.qpos[:, -1], pairs.goal_qpos, atol=1e-9)  # the stored goal, exactly
    assert qpos_success(replayed.qpos, pairs.goal_qpos).all()
    assert not qpos_success(replayed.qpos[:, :1], pairs.goal_qpos + 0.2).any()
    near = pairs.goal_qpos[:, None] + np.array([0.049, -0.049])  # within 0.05 rad on every joint, at one step
    assert qpos_success(np.concatenate([replayed.qpos[:, :1] + 1, near], axis=1), pairs.goal_qpos).all()
    assert not qpos_success(pairs.goal_qpos[:, None] + np.array([0.0, 0.051]), pairs.goal_qpos).any()
    low, high = wilson_interval(45, 50)
    assert 0.78 < low < 0.79 and 0.95 < high < 0.96  # the Wilson score interval of 90 % over 50
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0
    with pytest.raises(ValueError, match="longer than the goal offset"):
        draw_pairs(reacher_goals, "reacher-easy", pairs=2, offset=7, seed=0)


def test_start_history_is_what_led_to_the_start_and_the_agent_sees_it_first(reacher_goals):
    """``start_history``: the same pairs, plus the stored frames and actions before each start (a step before the
    episode repeats its first frame with a zero action); the agent sees them before its own steps."""
    from lavid.data.goals import read_episode
    from lavid.planning.reaching import draw_pairs, start_envs

    plain = draw_pairs(reacher_goals, "reacher-easy", pairs=8, offset=3, seed=2)
    pairs = draw_pairs(reacher_goals, "reacher-easy", pairs=8, offset=3, seed=2, history=2)
    np.testing.assert_array_equal(plain.start_frames, pairs.start_frames)  # the history changes no pair
    assert plain.history_frames is None and pairs.history_frames.shape == (8, 2, *pairs.start_frames.shape[1:])
    assert pairs.history_actions.shape == (8, 2, 2)
    before_the_episode = 0
    for e in range(8):
        ep = read_episode(reacher_goals, int(pairs.episodes[e]))
        t = next(i for i in range(len(ep.frames)) if np.array_equal(ep.frames[i], pairs.start_frames[e]))
        for k, back in enumerate((t - 2, t - 1)):
            np.testing.assert_array_equal(pairs.history_frames[e, k], ep.frames[max(back, 0)])
            np.testing.assert_allclose(pairs.history_actions[e, k], ep.actions[back] if back >= 0 else 0.0)
            before_the_episode += back < 0
    assert before_the_episode > 0  # the draw has starts near the episode's first step: that path is checked

    class Recorder:
        def __init__(self):
            self.seen = []

        def act(self, frames, actions):
            self.seen.append((frames.clone(), actions.clone()))
            return np.zeros((frames.shape[0], 2), np.float32)

    agent = Recorder()
    history = (pairs.history_frames, pairs.history_actions)
    episodes = run_closed_loop(start_envs(pairs, action_repeat=4), agent, steps=2, progress=False, history=history)
    assert episodes.frames.shape[1] == 3 and episodes.actions.shape[1] == 2  # the agent's own steps only
    (first, acted), (second, _) = agent.seen
    assert first.shape[1] == 3 and acted.shape[1] == 2 and second.shape[1] == 4
    np.testing.assert_array_equal(first[:, :2].numpy(), pairs.history_frames)
    np.testing.assert_array_equal(first[:, 2].numpy(), pairs.start_frames)
    np.testing.assert_allclose(acted.numpy(), pairs.history_actions)
    with pytest.raises(ValueError, match="history must hold"):
        run_closed_loop(start_envs(pairs, action_repeat=4), agent, 1, progress=False,
                        history=(history[0][:3], history[1]))
    with pytest.raises(ValueError, match="history must be >= 0"):
        draw_pairs(reacher_goals, "reacher-easy", pairs=2, offset=3, seed=0, history=-1)


def test_the_simulator_as_model_reaches_held_out_goals_and_random_does_not(reacher_goals):
    """The oracle row: the same planner with MuJoCo itself as the model and the true joint distance as cost."""
    from lavid.planning.reaching import draw_pairs, qpos_success, start_envs
    from lavid.planning.simulator_model import SimulatorAgent

    pairs = draw_pairs(reacher_goals, "reacher-easy", pairs=4, offset=6, seed=0)
    config = PlannerConfig(samples=100, elites=10, iterations=6, horizon=3)
    low, high = np.array([-1.0, -1.0], np.float32), np.array([1.0, 1.0], np.float32)
    envs = start_envs(pairs, action_repeat=4)
    agent = SimulatorAgent(envs, pairs.goal_qpos, low, high, config, seed=0, receding=3)
    planned = run_closed_loop(envs, agent, steps=9, progress=False)
    assert len(agent.plan_seconds) == 3  # replanned every 3 executed steps
    assert qpos_success(planned.qpos, pairs.goal_qpos).mean() >= 0.75
    envs = start_envs(pairs, action_repeat=4)
    random = run_closed_loop(envs, RandomAgent(low, high, 0), steps=9, progress=False)
    assert np.abs(random.qpos[:, -1] - pairs.goal_qpos).max(-1).mean() > np.abs(
        planned.qpos[:, -1] - pairs.goal_qpos).max(-1).mean()
    with pytest.raises(ValueError, match="receding"):
        SimulatorAgent(envs, pairs.goal_qpos, low, high, config, seed=0, receding=4)


@pytest.mark.parametrize("task,repeat", [("reacher-easy", 3), ("jaco-reach", 2)])
def test_the_simulator_cost_rolls_out_what_the_environment_steps(task, repeat):
    """The oracle's rollout (``mujoco.rollout``) and the environment's own step agree on where a sequence ends, on a
    task with one physics step a control step (reacher) and on one with 20 (Jaco's composer task)."""
    from lavid.data.sim import SimEnv
    from lavid.planning.simulator_model import SimulatorCost

    env = SimEnv(task, seed=0, size=8, action_repeat=repeat)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(env.action_low, env.action_high, size=(2, 3, env.action_dim))  # [K, H, A]
    cost = SimulatorCost([env], np.zeros((1, env.physics.model.nq)))  # reads the start state now
    for action in actions[0]:
        env.step(action)
    cost.goal_qpos = env.qpos()[None]  # where the environment ended after the first candidate
    costs = cost(torch.as_tensor(actions[None], dtype=torch.float32), torch.tensor([0]))[0]
    assert float(costs[0]) < 1e-6 < float(costs[1])
    env.close()


def test_the_feature_oracle_costs_the_rendered_end_state_against_the_goal_image(reacher_goals):
    """feature_oracle: the simulator as the model, the features of the rendered end state as the cost."""
    from lavid.planning.reaching import draw_pairs, start_envs
    from lavid.planning.simulator_model import FeatureSimulatorCost, SimulatorAgent

    pairs = draw_pairs(reacher_goals, "reacher-easy", pairs=2, offset=6, seed=0)
    envs, shadows = start_envs(pairs, action_repeat=4), start_envs(pairs, action_repeat=4)
    before = [env.qpos() for env in envs]
    pixels = lambda frames: frames.float().flatten(2)  # noqa: E731  [B, 1, 3, H, W] -> [B, 1, 3·H·W]
    goal_features = pixels(torch.from_numpy(pairs.goal_frames)[:, None])[:, 0]
    cost = FeatureSimulatorCost(envs, shadows, goal_features, pixels)
    stored = torch.from_numpy(pairs.oracle_actions).float()[:, None]  # [2, 1, 6, 2]: reaches the goal exactly
    other = torch.rand(2, 2, 6, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    costs = cost(torch.cat([stored, other], dim=1), torch.arange(2))
    assert costs.shape == (2, 3)
    assert torch.all(costs[:, 0] == 0) and torch.all(costs[:, 1:] > 0)  # the goal image, rendered again
    for env, qpos in zip(envs, before):
        np.testing.assert_array_equal(env.qpos(), qpos)  # the episodes' simulators are only read
    with pytest.raises(ValueError, match="last planned step"):
        SimulatorAgent(envs, pairs.goal_qpos, np.full(2, -1.0), np.full(2, 1.0), PlannerConfig(horizon=2), seed=0,
                       every_step=True, features=(shadows, goal_features, pixels))


def test_cost_spearman_ranks_on_the_circle_within_the_goals_scene():
    from lavid.planning.cost_ranking import angle_distance, cost_spearman, spearman

    rng = np.random.default_rng(0)
    angle = rng.uniform(-7, 7, size=(80, 1))  # a shoulder wound past ±π, as random-policy reacher episodes do
    goals = rng.uniform(-7, 7, size=(4, 1))
    def as_frames(q, scene=None):  # "images" of 3 channels, 1 pixel: the angle's point on the circle, a scene
        scene = np.zeros(len(q)) if scene is None else scene
        return np.concatenate([np.cos(q), np.sin(q), 10.0 * scene[:, None]], 1).astype(np.float32).reshape(-1, 3, 1, 1)

    def encode(frames):  # [B, 1, 3, 1, 1] -> features [B, 1, 3]
        return frames.float().flatten(2)

    # the chord distance grows with the wrapped angle: a perfect ranking, which raw angles would not see
    assert cost_spearman(encode, as_frames(angle), angle, as_frames(goals), goals) == pytest.approx(1.0)
    assert angle_distance(np.array([3.0]), np.array([-3.0])) == pytest.approx(2 * np.pi - 6.0)
    # two scenes (reacher's target per episode) far apart in feature space: ranked within the goal's own
    scene, goal_scene = np.arange(80) % 2, np.array([0, 1, 0, 1])
    frames, goal_frames = as_frames(angle, scene), as_frames(goals, goal_scene)
    assert cost_spearman(encode, frames, angle, goal_frames, goals, scene, goal_scene) == pytest.approx(1.0)
    assert cost_spearman(encode, frames, angle, goal_frames, goals) < 0.7  # the other scene ranks as far
    with pytest.raises(ValueError, match="groups"):
        cost_spearman(encode, frames, angle, goal_frames, goals, scene, None)
    noise = lambda frames: torch.randn(frames.shape[0], frames.shape[1], 4)  # noqa: E731
    assert abs(cost_spearman(noise, as_frames(angle), angle, as_frames(goals), goals)) < 0.5
    assert spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)


def test_evals_plan_anchors_protocol_writes_the_issue_columns_and_reuses_rows(reacher_goals, tmp_path):
    import csv

    script, out = ROOT / "evals" / "plan.py", tmp_path / "anchors"
    command = [sys.executable, str(script), "--task", "reacher-easy", "--out", str(out), "--train-data",
               str(reacher_goals), "--methods", "oracle,replay,random", "--pairs", "3", "--seeds", "0,1",
               "--goal-offset", "3", "--budget", "3", "--horizon", "2", "--receding", "2", "--samples", "16",
               "--elites", "4", "--iterations", "2", "--heldout-episodes", "2", "--episode-len", "7", "--size", "32",
               "--action-repeat", "4", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:8] == ["method", "success_rate", "success_ci_low", "success_ci_high", "final_distance_mean",
                                 "plan_seconds_mean", "labeled_transitions", "cost_spearman"]
    by = {r["method"]: r for r in rows}
    assert float(by["replay"]["success_rate"]) == 1.0 and float(by["replay"]["final_distance_mean"]) < 1e-6
    assert int(by["oracle"]["trials"]) == 6 and float(by["oracle"]["plan_seconds_mean"]) > 0
    assert by["oracle"]["cost_spearman"] == "" and by["random"]["labeled_transitions"] == "0"
    assert float(by["random"]["success_ci_low"]) <= float(by["random"]["success_rate"]) <= float(
        by["random"]["success_ci_high"])
    assert len((out / "runs.jsonl").read_text().splitlines()) == 6
    header = (out / "results.md").read_text().split("\n")[0]
    assert re.search(r"starts \d\.\d{3} m from its goal \(mean\), [0-3] of 3 pairs already inside", header), header
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "seed 0: success" not in again.stdout  # finished rows reused
    more = command.copy()
    more[more.index("0,1")] = "0,1,2"  # another seed: only its rows run
    grown = subprocess.run(more, capture_output=True, text=True, timeout=600)
    assert grown.returncode == 0 and "seed 2: success" in grown.stdout and "seed 0: success" not in grown.stdout
    bad = subprocess.run(command[:6] + ["--methods", "oracle,teleport"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "teleport" in bad.stderr and "Traceback" not in bad.stderr
    for flag, says in (("2x", "EPISODESxSTEPS"), ("0x100", "EPISODESxSTEPS")):  # a bad scale sweep, before any work
        bad = subprocess.run(command[:4] + ["--out", str(tmp_path / "scale"), "--scale", flag], capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and says in bad.stderr and not (tmp_path / "scale").exists()
    clash = subprocess.run(command + ["--scale", "20x10"], capture_output=True, text=True, timeout=120)
    assert clash.returncode == 2 and "--train-data" in clash.stderr
    negative = subprocess.run(command + ["--start-history", "-1"], capture_output=True, text=True, timeout=120)
    assert negative.returncode == 2 and "start-history" in negative.stderr
    seen = command.copy()  # the start's history goes to the learned planners only: the replay still ends on the goal
    seen[seen.index(str(out))], seen[seen.index("0,1")] = str(tmp_path / "history"), "0"
    replayed = subprocess.run(seen + ["--start-history", "2", "--methods", "replay"], capture_output=True, text=True,
                              timeout=600)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    with open(tmp_path / "history" / "results.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["success_rate"]) == 1.0
    # a camera the task lacks, or training data seen from another camera than the goals: stopped before any work
    for camera, says in (("nope", "no camera 'nope'"), ("top_close", "recorded from camera 0")):
        wrong = subprocess.run(command[:4] + ["--out", str(tmp_path / camera)] + command[6:] + ["--camera", camera],
                               capture_output=True, text=True, timeout=120)
        assert wrong.returncode == 2 and says in wrong.stderr and "Traceback" not in wrong.stderr
        assert not (tmp_path / camera / "heldout").exists()
    close = command[:4] + ["--out", str(tmp_path / "close")] + command[8:]  # its own data, from the closer view
    close[close.index("0,1")] = "0"
    built = subprocess.run(close + ["--camera", "top_close", "--methods", "replay", "--train-episodes", "2"],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    from lavid.data.goals import episode_table

    for part in ("data", "heldout"):
        assert set(episode_table(tmp_path / "close" / part)["camera"]) == {"top_close"}
    with open(tmp_path / "close" / "results.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["success_rate"]) == 1.0  # goals rendered and restored in that view


def test_train_data_takes_several_datasets_checked_each_and_named_absolute(reacher_goals, tmp_path, monkeypatch):
    """``--train-data A,B:2`` trains on both (``data.data``'s syntax), each checked as one is; a dataset rendered
    at another size stops before any work, naming it; a relative path names the same data as its absolute one."""
    from lavid.data.clips import open_meta
    from lavid.experiments.planning import PlanPreset, PlanSettings, _data_summary, _prepare, _resolved_sources

    monkeypatch.chdir(reacher_goals.parent)
    p = PlanPreset(size=32, action_repeat=4)
    s = PlanSettings(task="reacher-easy", out=str(tmp_path / "o"), train_data=f"{reacher_goals.name},{reacher_goals}:2",
                     progress=False)
    _, _, data, meta = _prepare(p, s, episode_len=7, size=32)
    assert data == f"{reacher_goals.resolve()},{reacher_goals.resolve()}:2" and meta["size"] == 32
    assert _resolved_sources(reacher_goals.name) == str(reacher_goals.resolve())
    steps = open_meta(reacher_goals)["counts"]["steps"]  # the results' header counts both
    assert _data_summary(data) == f"4 smooth-policy episodes ({2 * steps} stored steps)"
    small = tmp_path / "small"
    subprocess.run([sys.executable, str(ROOT / "data_prep" / "dmc.py"), "--task", "reacher-easy", "--episodes", "1",
                    "--episode-len", "5", "--clip-len", "4", "--size", "16", "--action-repeat", "4", "--workers", "0",
                    "--out", str(small), "--no-progress"], check=True, capture_output=True, timeout=300)
    mixed = PlanSettings(task="reacher-easy", out=str(tmp_path / "m"), train_data=f"{reacher_goals},{small}",
                         progress=False)
    with pytest.raises(ValueError, match=re.escape(f"differ in size: {reacher_goals} 32, {small} 16")):
        _prepare(p, mixed, episode_len=7, size=32)


def test_scale_points_parse():
    from lavid.experiments.planning import parse_points

    assert parse_points("200x1000, 1000x5000") == [(200, 1000), (1000, 5000)]
    for bad in ("", "200", "200x", "x5", "2.5x3", "0x10"):
        with pytest.raises(ConfigError, match="scale"):
            parse_points(bad)


def test_encoder_steps_train_the_predictor_on_the_frozen_encoder_of_a_first_stage(sim_data, tmp_path):
    """``encoder_steps`` > 0: the model trains ``encoder_steps`` into ``<run>_encoder``, then the run's predictor on
    that encoder, frozen, in the source's raw space; the run reloads without its source (its own weights hold it)."""
    import shutil

    from lavid.core.config import load_yaml
    from lavid.experiments.planning import train_world_model
    from lavid.training.runs import load_run

    tiny = [o for o in TINY if not o.startswith(("model.encoder.", "data.frames"))]
    overrides = [*tiny, "model.encoder.arch=conv", "model.encoder.mode=e2e", "model.encoder.img_size=32",
                 "model.encoder.embed_dim=16", "model.encoder.conv_channels=8", "model.encoder.conv_hidden=32",
                 "data.frames=4", "model.condition=action", "eval_every=0", "checkpoint_every=2"]
    run_dir = tmp_path / "runs" / "action"
    train_world_model(run_dir, sim_data, 2, overrides, seed=0, encoder_steps=2)
    source = tmp_path / "runs" / "action_encoder"
    encoder = load_yaml(run_dir / "config.yaml")["model"]["encoder"]
    assert encoder["mode"] == "frozen" and encoder["state_norm"] == "raw"
    assert encoder["checkpoint"] == str(source.resolve())
    first = load_run(source).model.encoder.state_dict()
    second = load_run(run_dir).model
    for name, tensor in first.items():
        assert torch.equal(second.encoder.state_dict()[name], tensor), name
    assert second.raw_states and second.frozen
    shutil.rmtree(source)
    assert load_run(run_dir).model.frozen  # built from its own checkpoint, not the moved source


def test_feature_cache_trains_the_second_stage_from_features_encoded_once(sim_data, tmp_path):
    """``feature_cache``: the frozen source encoder encodes the data once into ``<run>_encoder/features``; the
    predictor trains from it (``data.features``) to the same first loss as from frames; the cache is kept while
    the encoder matches and rebuilt when another encoder made it."""
    import json
    import shutil

    from lavid.core.cli import DEFAULT_CONFIG
    from lavid.core.config import load_config, load_yaml
    from lavid.data.store import read_meta
    from lavid.experiments.planning import train_world_model
    from lavid.training.feature_cache import ensure_feature_cache
    from lavid.training.train_config import TrainConfig

    tiny = [o for o in TINY if not o.startswith(("model.encoder.", "data.frames"))]
    overrides = [*tiny, "model.encoder.arch=conv", "model.encoder.mode=e2e", "model.encoder.img_size=32",
                 "model.encoder.embed_dim=16", "model.encoder.conv_channels=8", "model.encoder.conv_hidden=32",
                 "data.frames=4", "model.condition=action", "eval_every=0", "checkpoint_every=2"]
    cached, frames = tmp_path / "runs" / "action", tmp_path / "frames" / "action"
    train_world_model(cached, sim_data, 2, overrides, seed=0, encoder_steps=2, feature_cache=True)
    cache = tmp_path / "runs" / "action_encoder" / "features"
    meta = read_meta(cache)
    assert meta["complete"] and meta["action_dim"] > 0  # the action-conditioned predictor needs the actions
    assert load_yaml(cached / "config.yaml")["data"]["features"] == str(cache.resolve())
    frames.parent.mkdir()
    shutil.copytree(tmp_path / "runs" / "action_encoder", frames.parent / "action_encoder",
                    ignore=shutil.ignore_patterns("features"))
    train_world_model(frames, sim_data, 2, overrides, seed=0, encoder_steps=2)  # the same source, frames
    assert load_yaml(frames / "config.yaml")["data"]["features"] is None

    def first_loss(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        return rows[0]["loss"]

    assert first_loss(cached) == pytest.approx(first_loss(frames), rel=1e-4)
    source = load_yaml(cached / "config.yaml")["model"]["encoder"]["checkpoint"]
    same = load_config(TrainConfig, DEFAULT_CONFIG, [*overrides, f"data.data={sim_data}", "seed=0",
                                                     "model.encoder.mode=frozen", "model.encoder.state_norm=raw",
                                                     f"model.encoder.checkpoint={source}"])
    assert not ensure_feature_cache(same, str(cache), progress=False)  # kept: the same encoder made it
    other = load_config(TrainConfig, DEFAULT_CONFIG, [*overrides, f"data.data={sim_data}", "seed=3",
                                                      "model.encoder.mode=frozen"])
    assert ensure_feature_cache(other, str(cache), progress=False)  # another encoder: rebuilt
    assert read_meta(cache)["encoder"] != meta["encoder"]
    # a run folder trained with other settings is not reused as if it were the one asked for
    with pytest.raises(RuntimeError, match=r"other settings: seed 0 \(asked 1\)"):
        train_world_model(cached, sim_data, 2, overrides, seed=1, encoder_steps=2, feature_cache=True)


def test_each_controller_setting_gets_its_own_folder_so_another_fit_is_never_reused():
    from lavid.experiments.planning import PlanPreset, controller_folder

    assert controller_folder(PlanPreset()) == "controller"
    assert controller_folder(PlanPreset(labeled_fraction=1.0)) == "controller_labels1"
    assert controller_folder(PlanPreset(controller_prediction=1.0)) == "controller_prediction1"  # the earlier name
    assert controller_folder(PlanPreset(controller="mlp", controller_steps=200)) == "controller_mlp_steps200"
    assert controller_folder(PlanPreset(controller_previous=True, controller_dropout=0.2)) == "controller_previous_dropout0.2"
    assert controller_folder(PlanPreset(controller_imagined=1)) == "controller_imagined1"
    assert controller_folder(PlanPreset(controller="sequence")) == "controller_sequence"
    assert (controller_folder(PlanPreset(controller_layer_dropout=0.1, controller_weight_decay=0.05))
            == "controller_layerdrop0.1_wd0.05")
    assert (controller_folder(PlanPreset(controller="sequence", controller_pseudo_labels=0.4))
            == "controller_sequence_pseudo0.4")
    assert controller_folder(PlanPreset(controller_validation=0.1)) == "controller_val0.1"
