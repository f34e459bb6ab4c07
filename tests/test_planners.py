"""Planners (lavid/planning): CEM and MPPI find a known minimum, respect the bounds, are seeded and
reproducible batched or one episode at a time, and report bad settings and shapes clearly."""

from __future__ import annotations

import pytest
import torch

from lavid.planning.planner import Plan, PlannerConfig, plan, plan_looped, seeded_generators, warm_start
from lavid.core.config import ConfigError, from_dict

LOW, HIGH = torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 2.0])
# per method: settings under which the quadratic's minimum is found to within 0.05 (worst 0.02 over 40 seeds
# tried) and an outside target ends on the bound; MPPI's temperature is in units of cost, set for this cost
SETTINGS = {
    "cem": PlannerConfig(method="cem", samples=128, elites=16, iterations=16, horizon=2),
    "mppi": PlannerConfig(method="mppi", samples=128, iterations=20, horizon=2, temperature=0.01),
}


class Quadratic:
    """cost = squared distance to a per-episode target sequence ``[E, H, A]``; counts its calls."""

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets, self.calls = targets, 0

    def __call__(self, actions: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (actions - self.targets[episodes][:, None]).pow(2).sum(dim=(-2, -1))


def targets_inside(episodes: int = 3, horizon: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(episodes, horizon, 2, generator=generator) * 1.6 - 0.8) * HIGH


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_planner_finds_the_minimum_of_each_episode(method):
    targets = targets_inside()
    cost = Quadratic(targets)
    config = SETTINGS[method]
    result = plan(cost, LOW, HIGH, config, seeded_generators(range(3)))
    assert isinstance(result, Plan)
    assert result.actions.shape == result.mean.shape == result.std.shape == (3, 2, 2)
    assert (result.actions - targets).abs().max() < 0.05
    assert torch.allclose(result.cost, cost(result.actions[:, None], torch.arange(3))[:, 0])
    assert cost.calls == 1 + config.iterations + 1  # one batched call per iteration, one for the final means


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_a_target_outside_the_bounds_ends_on_the_bound(method):
    targets = targets_inside()
    targets[:, :, 0] = 3.0  # beyond high = 1
    targets[:, :, 1] = -5.0  # beyond low = -2
    samples_seen = []

    def cost(actions, episodes):
        samples_seen.append(actions)
        return Quadratic(targets)(actions, episodes)

    result = plan(cost, LOW, HIGH, SETTINGS[method], seeded_generators(range(3)))
    assert torch.allclose(result.actions[..., 0], torch.ones(3, 2), atol=1e-3)
    assert torch.allclose(result.actions[..., 1], torch.full((3, 2), -2.0), atol=1e-3)
    every = torch.cat([s.flatten(0, 1) for s in samples_seen])
    assert (every >= LOW).all() and (every <= HIGH).all()  # every sample was clipped to the bounds


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_batched_and_looped_plans_are_identical(method):
    cost = Quadratic(targets_inside(episodes=4))
    config = SETTINGS[method]
    batched = plan(cost, LOW, HIGH, config, seeded_generators([5, 6, 7, 8]))
    looped = plan_looped(cost, LOW, HIGH, config, seeded_generators([5, 6, 7, 8]))
    for name in ("actions", "mean", "std", "cost"):
        assert torch.equal(getattr(batched, name), getattr(looped, name)), name


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_the_same_seed_gives_the_same_plan_and_another_seed_another(method):
    cost = Quadratic(targets_inside())
    config = PlannerConfig(method=method, samples=16, elites=4, iterations=2, horizon=2)
    first = plan(cost, LOW, HIGH, config, seeded_generators([0, 1, 2]))
    again = plan(cost, LOW, HIGH, config, seeded_generators([0, 1, 2]))
    other = plan(cost, LOW, HIGH, config, seeded_generators([0, 1, 3]))
    assert torch.equal(first.actions, again.actions)
    assert torch.equal(first.actions[:2], other.actions[:2])  # episodes keep their own streams
    assert not torch.equal(first.actions[2], other.actions[2])


def test_a_warm_start_is_used_and_shifts_one_step():
    previous = torch.arange(3 * 3 * 2, dtype=torch.float32).reshape(3, 3, 2) / 20
    shifted = warm_start(previous, LOW, HIGH)
    assert shifted.shape == previous.shape
    assert torch.equal(shifted[:, :2], previous[:, 1:])
    assert torch.equal(shifted[:, 2], torch.zeros(3, 2))  # the middle of the bounds
    # a warm start at the answer with a narrow std stays there
    targets = targets_inside(horizon=3)
    config = PlannerConfig(samples=8, elites=2, iterations=1, init_std=1e-3, min_std=0.0)
    result = plan(Quadratic(targets), LOW, HIGH, config, seeded_generators(range(3)), mean=targets)
    assert (result.actions - targets).abs().max() < 1e-2


@pytest.mark.parametrize("key, value", [("elites", 0), ("elites", 300), ("samples", 0), ("iterations", 0),
                                        ("horizon", 0), ("momentum", 1.0), ("momentum", -0.1),
                                        ("temperature", 0.0), ("init_std", 0.0), ("min_std", -0.01)])
def test_bad_settings_are_config_errors_naming_the_key(key, value):
    config = PlannerConfig(**{key: value})
    with pytest.raises(ConfigError, match=rf"^planner\.{key}:"):
        config.validate("planner")
    with pytest.raises(ConfigError, match=rf"planner\.{key}"):
        plan(Quadratic(targets_inside()), LOW, HIGH, config, seeded_generators(range(3)))
    with pytest.raises(ConfigError, match=key):
        from_dict(PlannerConfig, {key: value})


def test_an_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="method"):
        from_dict(PlannerConfig, {"method": "random"})


def test_mismatched_shapes_are_clear_value_errors():
    cost, config = Quadratic(targets_inside()), PlannerConfig(samples=8, elites=2, iterations=1, horizon=2)
    with pytest.raises(ValueError, match="same length"):
        plan(cost, torch.zeros(2), torch.ones(3), config, seeded_generators(range(3)))
    with pytest.raises(ValueError, match="exceed"):
        plan(cost, HIGH, LOW, config, seeded_generators(range(3)))
    with pytest.raises(ValueError, match=r"mean must be \[E, H, A\] = \[2, 2, 2\]"):
        plan(cost, LOW, HIGH, config, seeded_generators(range(2)), mean=torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=r"episodes must be \[E\] = \[2\]"):
        plan_looped(cost, LOW, HIGH, config, seeded_generators(range(2)), episodes=torch.arange(3))
    with pytest.raises(ValueError, match="one generator per episode"):
        plan(cost, LOW, HIGH, config, [])
    with pytest.raises(ValueError, match=r"the cost must return \[E, K\] = \[3, 8\]"):
        plan(lambda actions, episodes: actions.sum(dim=(-2, -1)).flatten(), LOW, HIGH, config,
             seeded_generators(range(3)))
