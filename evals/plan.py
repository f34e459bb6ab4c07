"""Closed-loop goal reaching in the simulator: plan through world models with CEM or MPPI, act, replan.

    python evals/plan.py --task jaco-reach --out runs/plan_jaco
    python evals/plan.py --task reacher-easy --out runs/plan_reacher --latent-runs runs/a,runs/b --action-run runs/c

What it needs, it makes (each stage is skipped when its output is already there, so a killed run
resumes): white-noise training episodes of the task (``OUT/data``); per latent family a world model
trained without actions (``lavid/train.py``) and its controller, fit on ``--labeled-fraction`` of the
training episodes' actions (``lavid/train_controller.py``); an action-conditioned world model trained on
every action (``model.condition=action``); goal episodes with a seed of their own (``OUT/goals``: smooth
random motion, so the goal is away from the start).

Each goal episode gives a start state and a goal image ``--goal-steps`` steps later. Every method starts
from the same states, with the same goals and seeds, and acts for as many steps: the latent world models
with their controllers, the action-conditioned one, uniform random actions, and the oracle, which
replays the stored actions that reached the goal. Writes ``results.md``, ``results.csv``, ``results.json``
(one row per method) and a GIF per method of episode 0 (executed frames beside the goal) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lavid.core.cli import fail, setup_logging  # noqa: E402

THRESHOLD = {"jaco-reach": 0.05, "reacher-easy": 0.02, "reacher-hard": 0.02}
"""Success distance in metres (Jaco: 5 cm of the pinch site; reacher: 2 cm of the fingertip)."""


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", required=True, help="jaco-reach, reacher-easy, or any suite task (pose goals)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--episodes", type=int, default=16, help="goal episodes planned at once")
    parser.add_argument("--goal-steps", type=int, default=20, help="stored steps from start to goal")
    parser.add_argument("--mpc-steps", type=int, default=0, help="steps each method acts (0: --goal-steps)")
    parser.add_argument("--train-data", default="", help="trajectory data of the task (default OUT/data, built)")
    parser.add_argument("--train-episodes", type=int, default=80, help="white-noise training episodes to build")
    parser.add_argument("--action-repeat", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=1000, help="world-model training steps")
    parser.add_argument("--families", default="noisy:model.latent.beta=1e-4,discrete",
                        help="latent families to train and compare, each FAMILY[:KEY=VALUE;KEY=VALUE] (config "
                             "overrides of that run); the default config's noisy β 1e-3 collapses on one task's data")
    parser.add_argument("--latent-runs", default="", help="comma-separated trained latent runs (skips training)")
    parser.add_argument("--action-run", default="", help="a trained model.condition=action run (skips training)")
    parser.add_argument("--labeled-fraction", type=float, default=0.1,
                        help="share of the training episodes whose actions the controllers see")
    parser.add_argument("--controller", default="attention", choices=["attention", "mlp"])
    parser.add_argument("--controller-steps", type=int, default=1500)
    parser.add_argument("--planner", default="cem", choices=["cem", "mppi"])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--elites", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--context", type=int, default=2, help="observed steps the world model sees")
    parser.add_argument("--cost-steps", default="every", choices=["every", "last"],
                        help="cost the distance to the goal at every imagined step, or at the last one only (the "
                             "reference paper's); every step with horizon 5 planned better than the last step with "
                             "horizon 3 for all three models on reacher (BENCHMARKS.md)")
    parser.add_argument("--threshold", type=float, default=0.0, help="success distance (0: per task, metres)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    for name in ("episodes", "goal_steps", "train_episodes", "action_repeat", "train_steps", "samples", "elites",
                 "iterations", "horizon", "context", "controller_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.labeled_fraction <= 1:
        raise ValueError(f"--labeled-fraction must be in (0, 1], got {args.labeled_fraction}")
    if args.mpc_steps < 0 or args.threshold < 0:
        raise ValueError("--mpc-steps and --threshold must be >= 0")


def build_data(out: Path, task: str, episodes: int, episode_len: int, policy: str, seed: int, repeat: int,
               progress: bool, size: int = 64) -> None:
    from lavid.data.trajectories import TaskSpec, TrajectoryConfig, build_trajectory_dataset

    config = TrajectoryConfig(tasks=(TaskSpec(task, episodes, episode_len=episode_len, policy=policy),),
                              action_repeat=repeat, clip_len=16 if episode_len >= 16 else episode_len,
                              stride=2, seed=seed, size=size)
    build_trajectory_dataset(str(out), config, workers=2, progress=progress)


def trained(run: Path, steps: int) -> bool:
    from lavid.training.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run) if (run / "config.yaml").exists() else None
    state = checkpoint / "trainer_state.json" if checkpoint else None
    return bool(state and state.exists() and json.loads(state.read_text()).get("step", 0) >= steps)


def train_run(run: Path, data: Path, steps: int, overrides: list[str], seed: int) -> None:
    """``lavid/train.py`` in a process of its own (resumed if a checkpoint is there)."""
    import shutil

    from lavid.training.checkpoint import latest_checkpoint

    if trained(run, steps):
        return
    resume = run.exists() and latest_checkpoint(run) is not None
    if run.exists() and not resume:  # killed before its first checkpoint: nothing to keep
        shutil.rmtree(run)
    command = [sys.executable, str(REPO / "lavid" / "train.py"), f"data.data={data}", f"out_dir={run}",
               f"steps={steps}", f"seed={seed}", "probe_episodes=0", "trackers=[]", "progress=false",
               f"resume={'true' if resume else 'false'}", *overrides]
    print("training:", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def write_gif(path: Path, frames, goal) -> None:
    import imageio.v2 as imageio
    import numpy as np

    pictures = [np.concatenate([frame, goal], axis=-1).transpose(1, 2, 0) for frame in frames]
    pictures = [np.kron(p, np.ones((2, 2, 1), np.uint8)) for p in pictures]  # 2x: 64 px is small on a screen
    imageio.mimsave(path, pictures, duration=0.25, loop=0)


def format_table(rows: list[dict]) -> str:
    lines = ["| method | labeled transitions | final distance (mean ± std) | Δxyz | success | start distance | wall |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['labeled_transitions']} | {row['final_distance_mean']:.4f} ± "
                     f"{row['final_distance_std']:.4f} | {row['delta_xyz_mean']:.4f} | {row['success_rate']:.2f} | "
                     f"{row['start_distance_mean']:.4f} | {row['wall_s']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    setup_logging()
    try:
        check_args(args)
        from lavid.data.sim import SimError, check_task

        check_task(args.task)
    except (ValueError, SimError) as error:
        return fail(error)
    import numpy as np
    import torch

    from lavid.planning.controller import ControllerConfig
    from lavid.planning.dynamics import ActionDynamics
    from lavid.planning.fit_controller import ControllerTrainConfig, count_transitions, load_controller, \
        split_episodes, train_controller
    from lavid.planning.mpc import PlanningAgent, RandomAgent, ReplayAgent, run_closed_loop
    from lavid.planning.planner import PlannerConfig
    from lavid.planning.reaching import load_goals, reaching_metrics, start_envs
    from lavid.core.config import ConfigError
    from lavid.data.clips import DatasetFormatError
    from lavid.core.threads import usable_cores
    from lavid.data.sim import SimEnv, ensure_renderer
    from lavid.training.runs import RunError, load_run

    torch.set_num_threads(usable_cores())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    steps = args.mpc_steps or args.goal_steps
    threshold = args.threshold or THRESHOLD.get(args.task, 0.05)
    planner = PlannerConfig(method=args.planner, samples=args.samples, elites=min(args.elites, args.samples),
                            iterations=args.iterations, horizon=args.horizon)
    try:
        planner.validate("planner")
        ensure_renderer()
        data = Path(args.train_data) if args.train_data else out / "data"
        if not args.train_data:
            build_data(data, args.task, args.train_episodes, 50, "random", args.seed, args.action_repeat, progress)
        from lavid.data.clips import open_meta

        meta = open_meta(data)
        if meta.get("kind") != "trajectory" or args.task not in meta.get("tasks", [args.task]):
            raise ValueError(f"{data} holds no {args.task} trajectories (tasks: {meta.get('tasks')})")
        repeat = int(meta.get("action_repeat", args.action_repeat))
        goal_dir = out / "goals"  # goals as the training data was recorded: same size, same action repeat
        build_data(goal_dir, args.task, args.episodes, args.goal_steps + 1, "smooth", args.seed + 1000,
                   repeat, progress, int(meta.get("size", 64)))
        goals = load_goals(goal_dir, args.task, args.episodes, args.goal_steps)

        latent_runs = [Path(r) for r in args.latent_runs.split(",") if r]
        if not latent_runs:
            for entry in [f for f in args.families.split(",") if f]:
                family, _, extra = entry.partition(":")
                overrides = [o for o in extra.split(";") if o]
                name = "_".join([family] + [o.rpartition(".")[2].replace("=", "") for o in overrides])
                latent_runs.append(out / "runs" / name)
                train_run(latent_runs[-1], data, args.train_steps, [f"model.latent.family={family}", *overrides],
                          args.seed)
        action_run = Path(args.action_run) if args.action_run else out / "runs" / "action"
        if not args.action_run:
            train_run(action_run, data, args.train_steps, ["model.condition=action"], args.seed)

        methods = []  # (name, labeled transitions, the dynamics to plan with, or "random" / "oracle")
        env = SimEnv(goals.task, seed=0, size=8, camera=goals.camera)  # for the action bounds only
        low, high, action_dim = env.action_low, env.action_high, env.action_dim
        env.close()
        goal_frames = torch.from_numpy(goals.goal_frames)
        action_loaded = load_run(action_run)
        if not action_loaded.model.action_conditioned:
            raise RunError(f"{action_run} is not conditioned on actions (model.condition=action)")
        train_episodes, _ = split_episodes(action_loaded.config.data.data, action_loaded.config.data.holdout_fraction)
        all_labels = count_transitions(train_episodes)
        for run in latent_runs:
            controller_dir = run / "controller"
            if not (controller_dir / "metrics.json").exists():
                summary = train_controller(ControllerTrainConfig(
                    run=str(run), out_dir=str(controller_dir), labeled_fraction=args.labeled_fraction,
                    controller=ControllerConfig(variant=args.controller), steps=args.controller_steps,
                    seed=args.seed, progress=progress))
            summary = json.loads((controller_dir / "metrics.json").read_text())
            controller, _ = load_controller(controller_dir)
            loaded = load_run(run)
            latent = loaded.config.model.latent
            detail = f" β {latent.beta:g}" if latent.family == "noisy" else ""
            name = f"latent {latent.family}{detail} + controller"
            print(f"{name}: controller latent R² {summary['latent_r2']:.2f}, rollout ÷ IDM latents "
                  f"{summary['rollout_ratio']:.2f}, action gain {summary['action_gain']:.2f} "
                  f"({summary['labeled_transitions']} labeled transitions)", flush=True)
            dynamics = ActionDynamics(loaded.model, controller, action_dim)
            methods.append((name, summary["labeled_transitions"], dynamics))
        methods.append(("action-conditioned world model", all_labels,
                        ActionDynamics(action_loaded.model, None, action_dim)))
    except (RunError, ConfigError, DatasetFormatError, ValueError, FileNotFoundError,
            subprocess.CalledProcessError) as error:
        return fail(error)

    def agent_for(entry):
        if entry == "random":
            return RandomAgent(low, high, args.seed)
        if entry == "oracle":
            return ReplayAgent(goals.oracle_actions)
        return PlanningAgent(entry, goal_frames, low, high, planner, args.seed, context=args.context,
                             every_step=args.cost_steps == "every")

    rows = []
    methods += [("random actions", 0, "random"), ("oracle: replay the stored actions", 0, "oracle")]
    for name, labels, entry in methods:
        start = time.time()
        envs = start_envs(goals, repeat)
        episodes = run_closed_loop(envs, agent_for(entry), steps, progress=progress, desc=name)
        for env in envs:
            env.close()
        metrics = reaching_metrics(episodes.effector, goals, threshold)
        rows.append({"method": name, "labeled_transitions": labels, **metrics, "wall_s": time.time() - start,
                     "steps": steps, "threshold": threshold})
        slug = "".join(c if c.isalnum() else "_" for c in name.split(":")[0]).strip("_")
        write_gif(out / f"{slug}.gif", episodes.frames[0], goals.goal_frames[0])
        print(f"{name}: final distance {metrics['final_distance_mean']:.4f} ± {metrics['final_distance_std']:.4f}, "
              f"success {metrics['success_rate']:.2f}", flush=True)
    random_distance = next(r["final_distance_mean"] for r in rows if r["method"] == "random actions")
    for row in rows:
        row["vs_random"] = row["final_distance_mean"] / random_distance
    text = format_table(rows)
    header = (f"{args.task}: {args.episodes} episodes, goal {args.goal_steps} steps away, {steps} steps of "
              f"{args.planner.upper()} ({planner.samples} samples, {planner.elites} elites, {planner.iterations} "
              f"iterations, horizon {planner.horizon}, context {args.context}, cost at {args.cost_steps} step); success "
              f"within {threshold} m; "
              f"the action-conditioned model used {all_labels} labeled transitions")
    (out / "results.md").write_text(header + "\n\n" + text + "\n")
    (out / "results.json").write_text(json.dumps({"setup": vars(args), "rows": rows}, indent=1))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(header)
    print(text)
    print(f"results in {out}/: results.md, results.csv, results.json, *.gif")
    return 0


if __name__ == "__main__":
    sys.exit(main())
