"""A planning call with and without the predictor's key/value cache, at the anchors' CEM settings.

LeWorldModel plans reacher with CEM 300 samples / 30 elites / 10 iterations over a horizon of 5 from a
context of the last observed steps; ``evals/plan.py`` does the same. Without the cache every imagined step
reruns the predictor over the whole growing sequence (context + steps so far); with it
(:class:`lavid.models.predictor.KVCache`) each call processes only the new step and attends to the cached
keys and values. The model is the default one (``configs/tiny.yaml``), action-conditioned (reacher's 2
actions) or latent with a controller, untrained but with its zero-initialised AdaLN layers redrawn so that
the cost depends on the actions (see ``benchmarks/planning.py``). Both variants plan the same episodes from
the same seeds, interleaved, one warm-up each; medians over the repeats, and the largest difference between
their plans.

Usage:
    python benchmarks/plan_cache.py [--episodes 1 10] [--repeats 3] [--threads 2] [--context 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.planning import redraw_adaln_zero
from lavid.core.cli import DEFAULT_CONFIG
from lavid.core.config import load_config
from lavid.models.world_model import LatentActionWorldModel
from lavid.planning.controller import Controller, ControllerConfig
from lavid.planning.dynamics import ActionDynamics
from lavid.planning.mpc import GoalCost
from lavid.planning.planner import PlannerConfig, plan, seeded_generators
from lavid.training.train_config import TrainConfig

ACTION_DIM = 2  # reacher's


def dynamics_pair(kind: str, seed: int) -> tuple[ActionDynamics, ActionDynamics]:
    """(with cache, without) for the action-conditioned model or the latent model with a controller."""
    overrides = ["model.condition=action", f"model.action_dim={ACTION_DIM}"] if kind == "action" else []
    config = load_config(TrainConfig, str(DEFAULT_CONFIG), overrides)
    torch.manual_seed(seed)
    model = redraw_adaln_zero(LatentActionWorldModel(config.model).eval(), seed)
    controller = None
    if kind == "latent":
        controller = Controller(ControllerConfig(), ACTION_DIM, model.encoder.dim, model.encoder.num_tokens,
                                model.cond_dim).eval()
    return ActionDynamics(model, controller, ACTION_DIM), ActionDynamics(model, controller, ACTION_DIM, use_cache=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, nargs="+", default=[1, 10], help="episodes planned at once")
    parser.add_argument("--repeats", type=int, default=3, help="timed plans per variant, after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--context", type=int, default=2, help="observed steps (default 2, evals/plan.py's)")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--elites", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = PlannerConfig(method="cem", samples=args.samples, elites=args.elites, iterations=args.iterations,
                           horizon=args.horizon)
    print(f"CEM {args.samples} / {args.elites} / {args.iterations}, horizon {args.horizon}, context {args.context}; "
          f"configs/tiny.yaml's model; torch {torch.__version__}, {args.threads} CPU thread(s); medians of "
          f"{args.repeats}\n")
    print("| model | episodes | with cache, s / call | without, s / call | speed-up | with cache, s / episode "
          "| max abs Δ actions |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    low, high = -torch.ones(ACTION_DIM), torch.ones(ACTION_DIM)
    for kind in ("action", "latent"):
        cached, rerun = dynamics_pair(kind, args.seed)
        model = cached.model
        for episodes in args.episodes:
            generator = torch.Generator().manual_seed(args.seed + 1)
            frames = torch.randint(0, 256, (episodes, args.context, 3, model.config.encoder.img_size,
                                            model.config.encoder.img_size), dtype=torch.uint8, generator=generator)
            goal = torch.randint(0, 256, (episodes, 1, 3, model.config.encoder.img_size,
                                          model.config.encoder.img_size), dtype=torch.uint8, generator=generator)
            actions = torch.rand(episodes, args.context - 1, ACTION_DIM, generator=generator) * 2 - 1
            times, plans = {"cache": [], "rerun": []}, {}
            with torch.no_grad():
                states, goals = cached.encode(frames), cached.encode(goal)[:, 0]
                past = cached.observed_conditions(states, actions)
                for repeat in range(args.repeats + 1):
                    for name, dynamics in (("cache", cached), ("rerun", rerun)):
                        start = time.perf_counter()
                        plans[name] = plan(GoalCost(dynamics, states, past, goals), low, high, config,
                                           seeded_generators(range(episodes)))
                        if repeat:
                            times[name].append(time.perf_counter() - start)
            with_cache, without = statistics.median(times["cache"]), statistics.median(times["rerun"])
            difference = (plans["cache"].actions - plans["rerun"].actions).abs().max().item()
            print(f"| {kind} | {episodes} | {with_cache:.2f} | {without:.2f} | {without / with_cache:.2f}× "
                  f"| {with_cache / episodes:.2f} | {difference:.2g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
