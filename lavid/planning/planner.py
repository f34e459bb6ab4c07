"""Sampling planners over action sequences (CEM, MPPI) behind one small interface.

A planner searches ``H``-step action sequences in a box ``[low, high]`` for ``E`` episodes at once. Each
iteration draws ``K`` sequences per episode from a Gaussian ``N(mean, std²)`` (per step and action
entry), clips them to the box, costs all ``E·K`` of them in **one** call of the cost, and refits the
Gaussian: :func:`lavid.planning.cem.cem_update` (the elites' statistics) or
:func:`lavid.planning.mppi.mppi_update` (a softmax-weighted average). The std never falls below
``min_std``.

Reproducible by construction: each episode draws its noise from its own ``torch.Generator`` and no
statistic mixes episodes, so planning a batch of episodes gives bit-identical plans to planning them one
at a time (:func:`plan_looped`) whenever the cost treats its rows independently (a world model's cost
may differ in the last bits between batch sizes, through BLAS).

Example (model-predictive control: plan, execute the first action, shift, replan)::

    config = PlannerConfig(method="cem", horizon=3)
    generators = seeded_generators(range(episodes))
    result = plan(cost, low, high, config, generators)
    ...  # execute result.actions[:, 0]
    result = plan(cost, low, high, config, generators, mean=warm_start(result.mean, low, high))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from lavid.planning.cem import cem_update
from lavid.planning.mppi import mppi_update
from lavid.core.config import check


@dataclass
class PlannerConfig:
    """Attributes:
        method: ``cem`` (refit to the elites) or ``mppi`` (cost-weighted average of every sample).
        samples: ``K``, sequences drawn per episode and iteration.
        elites: the cheapest samples CEM refits to (``1 <= elites <= samples``; MPPI ignores it).
        iterations: rounds of sample, cost, refit.
        horizon: ``H``, steps of each action sequence.
        momentum: CEM only: new mean and std = momentum · old + (1 − momentum) · elite statistics; in [0, 1).
        temperature: MPPI only: weights softmax(−(cost − min cost) / temperature), in units of cost; > 0.
        init_std: the first std, as a fraction of the half range ``(high − low) / 2``; > 0.
        min_std: the floor of the std, in the same units; >= 0.
    """

    method: Literal["cem", "mppi"] = "cem"
    samples: int = 256
    elites: int = 32
    iterations: int = 4
    horizon: int = 3
    momentum: float = 0.1
    temperature: float = 0.5
    init_std: float = 0.5
    min_std: float = 0.05

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.method in ("cem", "mppi"), f"{key}method", f"must be cem or mppi, got {self.method!r}")
        check(self.samples >= 1, f"{key}samples", f"must be >= 1, got {self.samples}")
        check(1 <= self.elites <= self.samples, f"{key}elites",
              f"must be in [1, samples={self.samples}], got {self.elites}")
        check(self.iterations >= 1, f"{key}iterations", f"must be >= 1, got {self.iterations}")
        check(self.horizon >= 1, f"{key}horizon", f"must be >= 1, got {self.horizon}")
        check(0 <= self.momentum < 1, f"{key}momentum", f"must be in [0, 1), got {self.momentum}")
        check(self.temperature > 0, f"{key}temperature", f"must be > 0, got {self.temperature}")
        check(self.init_std > 0, f"{key}init_std", f"must be > 0, got {self.init_std}")
        check(self.min_std >= 0, f"{key}min_std", f"must be >= 0, got {self.min_std}")


class CostFn(Protocol):
    """The cost of candidate action sequences, lower is better."""

    def __call__(self, actions: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        """Args:
            actions: ``[E, K, H, A]`` ``K`` candidate sequences for each of ``E`` episodes.
            episodes: ``[E]`` long, which episodes the rows are (to index per-episode goals and context).

        Returns:
            ``[E, K]`` the cost of every candidate.
        """


@dataclass
class Plan:
    """A planner's result for ``E`` episodes.

    Attributes:
        actions: ``[E, H, A]`` the plan to execute: the cheapest of every sample costed and the final mean
            (the mean wins a tie).
        mean: ``[E, H, A]`` the final sampling mean (warm-start the next plan from it: :func:`warm_start`).
        std: ``[E, H, A]`` the final sampling std.
        cost: ``[E]`` the cost of ``actions``.
    """

    actions: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    cost: torch.Tensor


def seeded_generators(seeds: Iterable[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per episode on ``device``, seeded with its seed."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def plan(cost: CostFn, low: torch.Tensor, high: torch.Tensor, config: PlannerConfig,
         generators: list[torch.Generator], mean: torch.Tensor | None = None,
         episodes: torch.Tensor | None = None) -> Plan:
    """Plan ``H = config.horizon`` steps for ``E = len(generators)`` episodes with CEM or MPPI.

    Args:
        cost: called once per iteration with all ``[E, K, H, A]`` samples (and once at the end with the
            final means, ``[E, 1, H, A]``); returns ``[E, K]``.
        low, high: ``[A]`` the action bounds (``high > low``); their device and dtype are the planner's.
        config: the planner's settings (validated here; errors name ``planner.<key>``).
        generators: one per episode, on ``low``'s device: episode ``e``'s noise comes from ``generators[e]``.
        mean: ``[E, H, A]`` a warm start (clipped to the bounds); default the middle of the bounds.
        episodes: ``[E]`` long, passed on to ``cost``; default ``0 .. E-1``.

    Returns:
        The :class:`Plan`.

    Raises:
        ConfigError: an impossible config value.
        ValueError: bounds, generators, ``mean`` or ``episodes`` of the wrong shape or device, or a cost
            that returns the wrong shape.
    """
    config.validate("planner")
    low, high = _bounds(low, high)
    count, steps, size = len(generators), config.horizon, low.shape[0]
    _check_generators(generators, low.device)
    mean, episodes = _start(mean, episodes, count, steps, low, high)
    half_range = (high - low) / 2
    std = (config.init_std * half_range).expand(count, steps, size)
    min_std = config.min_std * half_range
    rows = torch.arange(count, device=low.device)
    best_actions, best_cost = mean, torch.full((count,), torch.inf, dtype=low.dtype, device=low.device)
    for _ in range(config.iterations):
        noise = torch.stack([torch.randn((config.samples, steps, size), generator=generator, device=low.device,
                                         dtype=low.dtype) for generator in generators])  # [E, K, H, A]
        samples = (mean[:, None] + std[:, None] * noise).clamp(low, high)
        costs = _evaluate(cost, samples, episodes)
        sample_cost, cheapest = costs.min(dim=1)
        better = sample_cost < best_cost
        best_cost = torch.where(better, sample_cost, best_cost)
        best_actions = torch.where(better[:, None, None], samples[rows, cheapest], best_actions)
        if config.method == "cem":
            mean, std = cem_update(samples, costs, mean, std, config.elites, config.momentum)
        else:
            mean, std = mppi_update(samples, costs, config.temperature)
        std = torch.maximum(std, min_std)
    mean_cost = _evaluate(cost, mean[:, None], episodes)[:, 0]
    use_mean = mean_cost <= best_cost
    return Plan(actions=torch.where(use_mean[:, None, None], mean, best_actions), mean=mean, std=std,
                cost=torch.where(use_mean, mean_cost, best_cost))


def plan_looped(cost: CostFn, low: torch.Tensor, high: torch.Tensor, config: PlannerConfig,
                generators: list[torch.Generator], mean: torch.Tensor | None = None,
                episodes: torch.Tensor | None = None) -> Plan:
    """:func:`plan`, one episode at a time (each with its own generator): the reference for tests and the
    benchmark. Same arguments and result."""
    low, high = _bounds(low, high)
    mean, episodes = _start(mean, episodes, len(generators), config.horizon, low, high)
    plans = [plan(cost, low, high, config, [generator], mean[e : e + 1], episodes[e : e + 1])
             for e, generator in enumerate(generators)]
    return Plan(*(torch.cat([getattr(p, f.name) for p in plans]) for f in dataclasses.fields(Plan)))


def warm_start(previous_mean: torch.Tensor, low: torch.Tensor, high: torch.Tensor, executed: int = 1) -> torch.Tensor:
    """The start of the next replanning: ``previous_mean [E, H, A]`` shifted ``executed`` steps earlier (those
    were executed), the new last steps at the middle of the bounds ``[A]``. Returns ``[E, H, A]``."""
    low, high = _bounds(low, high)
    middle = ((low + high) / 2).expand(previous_mean.shape[0], executed, low.shape[0])
    return torch.cat([previous_mean[:, executed:], middle.to(previous_mean.dtype)], dim=1)


def _bounds(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    if low.ndim != 1 or low.shape != high.shape or low.numel() == 0:
        raise ValueError(f"low and high must be 1-D [A] of the same length, got {tuple(low.shape)} and "
                         f"{tuple(high.shape)}")
    if low.device != high.device:
        raise ValueError(f"low is on {low.device} but high on {high.device}")
    if not low.is_floating_point():
        low = low.to(torch.get_default_dtype())
    high = high.to(low.dtype)
    if not bool((high > low).all()):
        raise ValueError(f"every high must exceed its low, got low={low.tolist()} high={high.tolist()}")
    return low, high


def _check_generators(generators: list[torch.Generator], device: torch.device) -> None:
    if not generators:
        raise ValueError("need one generator per episode, got none")
    for generator in generators:
        if generator.device.type != device.type:
            raise ValueError(f"a generator is on {generator.device} but the bounds on {device}")


def _start(mean: torch.Tensor | None, episodes: torch.Tensor | None, count: int, steps: int,
           low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first mean ``[E, H, A]`` and the episode indices ``[E]``, checked against ``count`` generators."""
    shape = (count, steps, low.shape[0])
    if mean is None:
        mean = ((low + high) / 2).expand(shape)
    elif tuple(mean.shape) != shape:
        raise ValueError(f"mean must be [E, H, A] = {list(shape)} (E from {count} generators), got "
                         f"{list(mean.shape)}")
    if episodes is None:
        episodes = torch.arange(count, device=low.device)
    elif tuple(episodes.shape) != (count,):
        raise ValueError(f"episodes must be [E] = [{count}] (one per generator), got {list(episodes.shape)}")
    return mean.to(low).clamp(low, high), episodes


def _evaluate(cost: CostFn, samples: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
    values = cost(samples, episodes)
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != tuple(samples.shape[:2]):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"the cost must return [E, K] = {list(samples.shape[:2])} for actions "
                         f"{list(samples.shape)}, got {shape}")
    return values
