"""Planning throughput: the batched planner vs the same planner one episode at a time, on a world-model cost.

The world model is the default one (``configs/tiny.yaml``'s model) conditioned on true actions
(``model.condition=action``, ``model.action_dim=9``, Jaco's action size; bounds [-1, 1] as DMControl's),
untrained. AdaLN-zero makes an untrained predictor ignore its conditions (its gates and head start at
zero: every rollout copies the last state, every sample costs the same), so those zero-initialized layers
are redrawn from a seeded N(0, 0.02²); the cost then depends on the actions.

Each episode has a random context of S0 = 4 states ``[S0, N, D]`` with its 3 past actions and a random
goal state ``[N, D]``; the cost is the one ``evals/plan.py`` plans with (:class:`lavid.planning.mpc.GoalCost`):
the L2 distance between the last state of ``model.rollout(context, past actions + candidate)`` and the goal. Both planners run interleaved, one
warm-up call each, medians over the repeats; the table gives milliseconds per plan of all episodes, the
speed-up and the largest difference between the two plans' actions and costs (0 means bit-identical; with BLAS,
batches of different sizes may differ in the last bits and a different elite can follow). A second set of
rows plans against a nearly free quadratic cost: the planner's own time.

Usage:
    python benchmarks/planning.py [--episodes 16] [--repeats 5] [--threads 1] [--methods cem mppi]
        [--samples 256] [--iterations 4] [--horizon 3] [--chunk 0] [--config configs/tiny.yaml] [--device cpu]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from lavid.planning.dynamics import ActionDynamics
from lavid.planning.mpc import GoalCost
from lavid.planning.planner import Plan, PlannerConfig, plan, plan_looped, seeded_generators
from lavid.core.cli import DEFAULT_CONFIG
from lavid.core.config import load_config
from lavid.models.world_model import LatentActionWorldModel
from lavid.training.train_config import TrainConfig

ACTION_DIM = 9  # Jaco's
CONTEXT_STEPS = 4


class QuadraticCost:
    """Squared distance to a random per-episode target ``[E, H, A]``: nearly free, so the planner's own time."""

    def __init__(self, episodes: int, horizon: int, seed: int, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(seed + 2)
        self.targets = (torch.rand(episodes, horizon, ACTION_DIM, generator=generator) * 2 - 1).to(device)

    def __call__(self, actions: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        return (actions - self.targets[episodes][:, None]).pow(2).sum(dim=(-2, -1))


def world_model(config_path: str, seed: int) -> LatentActionWorldModel:
    """The config's model, action-conditioned, untrained, with its AdaLN-zero layers redrawn (see above)."""
    config = load_config(TrainConfig, config_path, ["model.condition=action", f"model.action_dim={ACTION_DIM}"])
    torch.manual_seed(seed)
    return redraw_adaln_zero(LatentActionWorldModel(config.model).eval(), seed)


def redraw_adaln_zero(model: LatentActionWorldModel, seed: int) -> LatentActionWorldModel:
    """Redraw the predictor's zero-initialized AdaLN and head layers from a seeded N(0, 0.02²), in place, so
    that an untrained model's predictions depend on its conditions."""
    generator = torch.Generator().manual_seed(seed)
    predictor = model.predictor
    for layer in [block.modulation[1] for block in predictor.blocks] + [predictor.final_modulation[1], predictor.head]:
        for parameter in (layer.weight, layer.bias):
            parameter.data.normal_(0.0, 0.02, generator=generator)
    return model


def goal_cost(model: LatentActionWorldModel, episodes: int, seed: int, chunk: int = 0) -> GoalCost:
    """Random contexts, past actions and goals (drawn on the CPU, then moved to the model's device)."""
    generator = torch.Generator().manual_seed(seed + 1)
    tokens, dim = model.encoder.num_tokens, model.encoder.dim
    device = next(model.parameters()).device
    context = torch.randn(episodes, CONTEXT_STEPS, tokens, dim, generator=generator).to(device)
    past_actions = (torch.rand(episodes, CONTEXT_STEPS - 1, model.cond_dim, generator=generator) * 2 - 1).to(device)
    goal = torch.randn(episodes, tokens, dim, generator=generator).to(device)
    return GoalCost(ActionDynamics(model, None, ACTION_DIM), context, past_actions, goal, chunk=chunk)


def compare(cost: GoalCost | QuadraticCost, config: PlannerConfig, episodes: int, repeats: int,
            device: torch.device) -> dict[str, float]:
    """Both planners, interleaved; medians in ms, and how far apart their plans are."""
    low, high = -torch.ones(ACTION_DIM, device=device), torch.ones(ACTION_DIM, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    planners = {"batched": plan, "looped": plan_looped}
    times: dict[str, list[float]] = {name: [] for name in planners}
    plans: dict[str, Plan] = {}
    with torch.no_grad():
        for run in range(repeats + 1):  # the first is a warm-up
            for name, planner in planners.items():
                generators = seeded_generators(range(episodes), device)
                sync()
                start = time.perf_counter()
                plans[name] = planner(cost, low, high, config, generators)
                sync()
                if run:
                    times[name].append((time.perf_counter() - start) * 1e3)
    batched, looped = (statistics.median(times[name]) for name in planners)
    return {"batched": batched, "looped": looped, "speedup": looped / batched,
            "difference": (plans["batched"].actions - plans["looped"].actions).abs().max().item(),
            "cost_difference": (plans["batched"].cost - plans["looped"].cost).abs().max().item(),
            "cost": plans["batched"].cost.mean().item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=16, help="episodes planned at once (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed plans per planner, after a warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--methods", nargs="+", default=["cem", "mppi"], choices=["cem", "mppi"])
    parser.add_argument("--samples", type=int, default=PlannerConfig.samples, help="samples per episode (K)")
    parser.add_argument("--iterations", type=int, default=PlannerConfig.iterations)
    parser.add_argument("--horizon", type=int, default=PlannerConfig.horizon)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="whose model (default configs/tiny.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--chunk", type=int, default=0,
                        help="world-model rollouts per model call inside the cost (default 0: all at once)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = world_model(args.config, args.seed).to(device)
    costs = {"world model": goal_cost(model, args.episodes, args.seed, args.chunk),
             "quadratic (planner alone)": QuadraticCost(args.episodes, args.horizon, args.seed, device)}
    print(f"{args.episodes} episodes, {args.samples} samples, {args.iterations} iterations, horizon {args.horizon}, "
          f"context {CONTEXT_STEPS} steps of {model.encoder.num_tokens}×{model.encoder.dim}, actions {ACTION_DIM}; "
          f"torch {torch.__version__}, {device}, {args.threads} CPU thread(s); rollouts per model call: {args.chunk or 'all'}; "
          f"medians of {args.repeats}\n")
    print("| cost | method | batched ms / plan | looped ms / plan | speed-up | max abs Δ actions | max abs Δ cost "
          "| mean cost |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (cost_name, cost), method in itertools.product(costs.items(), args.methods):
        config = PlannerConfig(method=method, samples=args.samples, iterations=args.iterations, horizon=args.horizon,
                               elites=min(PlannerConfig.elites, args.samples))
        row = compare(cost, config, args.episodes, args.repeats, device)
        print(f"| {cost_name} | {method} | {row['batched']:.1f} | {row['looped']:.1f} | {row['speedup']:.2f}× "
              f"| {row['difference']:.3g} | {row['cost_difference']:.3g} | {row['cost']:.4g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
