"""A planning call in float32 and under bfloat16 autocast, on a trained run and the anchors' held-out pairs.

The issue's bar for planning is 1 s a call on 2 cores at the anchors' CEM settings (300 samples, 30 elites, 10
iterations, horizon 5); `--preset cpu`'s 7.4 M predictor takes about 2 s a pair in float32, nearly all of it
in the predictor's matrix products. This CPU has AVX512-BF16, so the imagination may run faster in bfloat16
(:class:`lavid.planning.dynamics.ActionDynamics` ``precision="bfloat16"``: the predictor and controller under
autocast; the encoder, the goal's features and the cost in float32). Both variants plan the first plan of the
same pairs from the same seeds, interleaved, one warm-up each; medians over the repeats. Beside the time:

- ``Δ first action``: the mean absolute difference between the two variants' first actions, ÷ the action range
  (0: the same plan; independent uniform actions differ by 1/3);
- ``float32 cost of the bfloat16 plan ÷ of its own``: each plan costed by the float32 model (1: as good a plan by
  the float32 model's own measure).

Usage:
    python benchmarks/plan_precision.py --heldout OUT/heldout --run RUN [--controller controller] [--pairs 50]
        [--repeats 3] [--threads 2] [--task reacher-easy] [--goal-offset 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", required=True, help="held-out trajectories (evals/plan.py's OUT/heldout)")
    parser.add_argument("--run", required=True, help="a trained run (action-conditioned, or latent with --controller)")
    parser.add_argument("--controller", default="controller", help="a latent run's controller subfolder")
    parser.add_argument("--task", default="reacher-easy")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--goal-offset", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed plans per variant, after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--elites", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from lavid.data.sim import SimEnv
    from lavid.planning.dynamics import ActionDynamics
    from lavid.planning.fit_controller import load_controller
    from lavid.planning.mpc import GoalCost
    from lavid.planning.planner import PlannerConfig, plan, seeded_generators
    from lavid.planning.reaching import draw_pairs
    from lavid.training.runs import load_run

    torch.set_num_threads(args.threads)
    pairs = draw_pairs(args.heldout, args.task, args.pairs, args.goal_offset, seed=args.seed)
    env = SimEnv(args.task, seed=0, size=8, camera=pairs.camera)
    low, high, action_dim = torch.as_tensor(env.action_low), torch.as_tensor(env.action_high), env.action_dim
    env.close()
    model = load_run(args.run).model.eval()
    controller = None if model.action_conditioned else load_controller(Path(args.run) / args.controller)[0]
    config = PlannerConfig(method="cem", samples=args.samples, elites=args.elites, iterations=args.iterations,
                           horizon=args.horizon)
    variants = {p: ActionDynamics(model, controller, action_dim, precision=p) for p in ("float32", "bfloat16")}
    exact = variants["float32"]
    count = len(pairs)
    with torch.no_grad():
        states = exact.encode(torch.from_numpy(pairs.start_frames)[:, None])  # [E, 1, N, D]
        goals = exact.encode(torch.from_numpy(pairs.goal_frames)[:, None])[:, 0]
        past = exact.observed_conditions(states, torch.zeros(count, 0, action_dim))
        times, plans = {name: [] for name in variants}, {}
        for repeat in range(args.repeats + 1):
            for name, dynamics in variants.items():
                start = time.perf_counter()
                plans[name] = plan(GoalCost(dynamics, states, past, goals), low, high, config,
                                   seeded_generators(range(count))).actions  # [E, H, A]
                if repeat:
                    times[name].append(time.perf_counter() - start)
        reference = GoalCost(exact, states, past, goals)
        episodes = torch.arange(count)
        own = reference(plans["float32"][:, None], episodes)[:, 0]
        other = reference(plans["bfloat16"][:, None], episodes)[:, 0]
    first = (plans["bfloat16"][:, 0] - plans["float32"][:, 0]).abs() / (high - low)
    fp32, bf16 = statistics.median(times["float32"]), statistics.median(times["bfloat16"])
    print(f"{args.run}: {count} pairs planned at once, CEM {args.samples} / {args.elites} / {args.iterations}, horizon "
          f"{args.horizon}; torch {torch.__version__}, {args.threads} CPU thread(s); medians of {args.repeats}\n")
    print("| precision | s / call | s / pair | speed-up | Δ first action (÷ range) | float32 cost of the plan ÷ "
          "float32's own |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| float32 | {fp32:.2f} | {fp32 / count:.3f} | 1.00× | 0 | 1.000 |")
    print(f"| bfloat16 autocast | {bf16:.2f} | {bf16 / count:.3f} | {fp32 / bf16:.2f}× | {first.mean():.3f} | "
          f"{(other / own).mean():.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
