"""Closed-loop goal reaching in the simulator (``evals/plan.py``): plan through world models with CEM or
MPPI, act, replan; every method on the same start states, goals and seeds.

Stages, each skipped when its output is already there (a killed run resumes): white-noise training episodes
of the task (``OUT/data``); per latent family a world model trained without actions and its controller, fit
on ``labeled_fraction`` of the training episodes' actions; an action-conditioned world model trained on every
action (``model.condition=action``); goal episodes with a seed of their own (``OUT/goals``: smooth random
motion, so the goal is away from the start). Then every method acts: the latent world models with their
controllers, the action-conditioned one, uniform random actions, and the oracle, which replays the stored
actions that reached the goal. The settings are a preset of ``configs/experiments/plan/``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from lavid.core.config import check
from lavid.experiments.results import cell, markdown_table, write_results
from lavid.experiments.runner import train_subprocess, trained_steps

log = logging.getLogger(__name__)

THRESHOLD = {"jaco-reach": 0.05, "reacher-easy": 0.02, "reacher-hard": 0.02}
"""Success distance in metres (Jaco: 5 cm of the pinch site; reacher: 2 cm of the fingertip)."""

FIXED_METHODS = ("oracle", "replay", "random")
"""The anchors' protocol's rows that need no world model: the simulator as the planner's model with the true
joint distance as cost (``oracle``), the stored actions from start to goal (``replay``), uniform actions.
``feature_oracle`` keeps the simulator as the model but costs by the action-conditioned world model's encoder
(the features' distance between the rendered end state and the goal image): it separates a bad cost from bad
dynamics, and renders every candidate, so it is slow (about 10 ms an image on 2 cores)."""


UNSIGNED_DEFAULTS = {"precision": "float32", "controller_previous": False, "controller_dropout": 0.0,
                     "controller_imagined": 0, "controller_layer_dropout": 0.0, "controller_weight_decay": 1e-4,
                     "controller_pseudo_labels": 0.0, "controller_validation": 0.0}
"""Preset keys added after ``runs.jsonl`` rows were written: at these values they stay out of a row's signature."""


@dataclass
class PlanPreset:
    """The settings of one planning comparison (``configs/experiments/plan/*.yaml``; each key is also a flag
    of ``evals/plan.py``). The presets' comments say what each key means: ``smoke.yaml`` for the anchors'
    protocol (``protocol: anchors``), ``goal_episodes.yaml`` for the earlier one (``protocol: episodes``)."""

    protocol: Literal["anchors", "episodes"] = "anchors"
    # the anchors' protocol (LeWorldModel, DINO-WM): start / goal pairs from held-out trajectories
    methods: str = "oracle,replay,random,action,latent_noisy"
    pairs: int = 50
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    goal_offset: int = 5
    budget: int = 10
    receding: int = 5
    start_history: int = 0
    episode_len: int = 40
    heldout_episodes: int = 20
    size: int = 64
    camera: str = ""
    success_qpos: float = 0.05
    # the earlier protocol (and the training and planner settings both share)
    episodes: int = 16
    goal_steps: int = 20
    mpc_steps: int = 0
    train_episodes: int = 80
    action_repeat: int = 4
    train_steps: int = 1000
    encoder_steps: int = 0
    feature_cache: bool = False
    families: str = "noisy:model.latent.beta=1e-3,discrete"
    train_overrides: str = ""
    labeled_fraction: float = 0.1
    controller: Literal["attention", "mlp", "sequence"] = "attention"
    controller_steps: int = 1500
    controller_prediction: float = 0.0
    controller_previous: bool = False
    controller_dropout: float = 0.0
    controller_imagined: int = 0
    controller_layer_dropout: float = 0.0
    controller_weight_decay: float = 1e-4
    controller_pseudo_labels: float = 0.0
    controller_validation: float = 0.0
    planner: Literal["cem", "mppi"] = "cem"
    samples: int = 128
    elites: int = 16
    iterations: int = 3
    horizon: int = 5
    context: int = 2
    cost_steps: Literal["every", "last"] = "every"
    precision: Literal["float32", "bfloat16"] = "float32"
    threshold: float = 0.0
    seed: int = 0

    def validate(self, prefix: str = "") -> None:
        for name in ("episodes", "goal_steps", "train_episodes", "action_repeat", "train_steps", "samples", "elites",
                     "iterations", "horizon", "context", "controller_steps"):
            check(getattr(self, name) >= 1, name.replace("_", "-"), f"must be >= 1, got {getattr(self, name)}")
        check(0 < self.labeled_fraction <= 1, "labeled-fraction", f"must be in (0, 1], got {self.labeled_fraction}")
        check(self.mpc_steps >= 0, "mpc-steps", f"must be >= 0, got {self.mpc_steps}")
        check(self.threshold >= 0, "threshold", f"must be >= 0, got {self.threshold}")
        check(self.controller_prediction >= 0, "controller-prediction",
              f"must be >= 0, got {self.controller_prediction}")
        check(0 <= self.controller_dropout <= 1, "controller-dropout", f"must be in [0, 1], got {self.controller_dropout}")
        check(self.controller_imagined >= 0, "controller-imagined", f"must be >= 0, got {self.controller_imagined}")
        check(0 <= self.controller_layer_dropout < 1, "controller-layer-dropout",
              f"must be in [0, 1), got {self.controller_layer_dropout}")
        check(0 <= self.controller_pseudo_labels <= 1 - self.labeled_fraction, "controller-pseudo-labels",
              f"must be in [0, 1 - labeled-fraction], got {self.controller_pseudo_labels}")
        check(0 <= self.controller_validation < 1, "controller-validation",
              f"must be in [0, 1), got {self.controller_validation}")
        check(not self.controller_pseudo_labels or self.controller == "sequence", "controller-pseudo-labels",
              "is for the sequence controller (--controller sequence)")
        check(self.controller_weight_decay >= 0, "controller-weight-decay",
              f"must be >= 0, got {self.controller_weight_decay}")
        check(self.start_history >= 0, "start-history", f"must be >= 0, got {self.start_history}")
        check(self.encoder_steps >= 0, "encoder-steps", f"must be >= 0, got {self.encoder_steps}")
        for name in ("pairs", "goal_offset", "budget", "receding", "episode_len", "heldout_episodes", "size"):
            check(getattr(self, name) >= 1, name.replace("_", "-"), f"must be >= 1, got {getattr(self, name)}")
        check(self.receding <= self.horizon, "receding", f"must be <= horizon {self.horizon}, got {self.receding}")
        check(self.episode_len > self.goal_offset, "episode-len",
              f"must exceed goal-offset {self.goal_offset}, got {self.episode_len}")
        check(len(self.seeds) >= 1, "seeds", "needs at least one seed")
        check(self.success_qpos > 0, "success-qpos", f"must be > 0, got {self.success_qpos}")
        unknown = [m for m in self.method_list() if m not in FIXED_METHODS and m not in ("action", "feature_oracle")
                   and not m.startswith("latent_")]
        check(not unknown, "methods", f"unknown {', '.join(unknown)}; choose from {', '.join(FIXED_METHODS)}, "
                                      "feature_oracle, action, latent_<family>")

    def override_list(self) -> list[str]:
        """``train_overrides`` (``key=value;key=value``) as config overrides of every world model."""
        return [o.strip() for o in self.train_overrides.split(";") if o.strip()]

    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


@dataclass
class PlanSettings:
    """What a preset does not fix: the task, the output folder, given runs and data, and the progress bars."""

    task: str
    out: str
    train_data: str = ""
    latent_runs: tuple[str, ...] = ()
    action_run: str = ""
    progress: bool = True


def build_data(out: Path, task: str, episodes: int, episode_len: int, policy: str, seed: int, repeat: int,
               progress: bool, size: int = 64, camera: str = "") -> None:
    """``episodes`` episodes of ``task`` under ``policy`` into ``out`` (resumed per episode), seen from
    ``camera`` (a camera index or name or a :data:`lavid.data.sim.VIEWS` name; ``""``: the task's default)."""
    from lavid.data.sim import parse_camera
    from lavid.data.trajectories import TaskSpec, TrajectoryConfig, build_trajectory_dataset

    view = parse_camera(camera) if camera else None
    config = TrajectoryConfig(tasks=(TaskSpec(task, episodes, camera=view, episode_len=episode_len, policy=policy),),
                              action_repeat=repeat, clip_len=16 if episode_len >= 16 else episode_len,
                              stride=2, seed=seed, size=size)
    build_trajectory_dataset(str(out), config, workers=2, progress=progress)


def train_world_model(run: Path, data: str | Path, steps: int, overrides: list[str], seed: int,
                      encoder_steps: int = 0, feature_cache: bool = False) -> None:
    """``lavid/train.py`` on ``data`` in a process of its own (resumed from its checkpoint).

    ``encoder_steps > 0`` trains in two stages: the same model for ``encoder_steps`` into ``<run>_encoder``
    (its encoder learns there, end to end or as configured), then ``run``'s predictor for ``steps`` on that
    encoder, frozen (``model.encoder.mode=frozen``, the states in the source's own space). Measured on reacher:
    the features an early run learned are a usable cost and do not degrade while the predictor trains on
    (BENCHMARKS.md, issue 34 part 8). ``feature_cache`` (two stages only): the data encoded once by the frozen
    encoder into ``<run>_encoder/features`` (:func:`~lavid.training.feature_cache.ensure_feature_cache`, kept
    while it matches), and the predictor trained from it instead of frames.
    """
    common = [f"data.data={data}", f"seed={seed}", "probe_episodes=0", "trackers=[]", *overrides]
    if encoder_steps:
        from lavid.core.config import load_yaml

        source = run.parent / f"{run.name}_encoder"
        train_world_model(source, data, encoder_steps, overrides, seed)
        mode = load_yaml(source / "config.yaml")["model"]["encoder"]["mode"]
        common += ["model.encoder.mode=frozen", f"model.encoder.checkpoint={source.resolve()}",
                   f"model.encoder.state_norm={'raw' if mode == 'e2e' else 'layer_norm'}"]
    _check_same_model(run, common)  # before any work, the feature cache's included
    if encoder_steps and feature_cache and trained_steps(run) < steps:
        from lavid.core.cli import DEFAULT_CONFIG
        from lavid.core.config import load_config
        from lavid.training.feature_cache import ensure_feature_cache
        from lavid.training.train_config import TrainConfig

        cache = source / "features"
        if ensure_feature_cache(load_config(TrainConfig, DEFAULT_CONFIG, common), str(cache), progress=False):
            log.info("encoded %s with %s's frozen encoder into %s", data, source.name, cache)
        common.append(f"data.features={cache.resolve()}")
    result = train_subprocess(run, steps, common)
    if result["status"] != "trained":
        raise RuntimeError(f"training {run} failed: {result['error']}")


def _check_same_model(run: Path, overrides: list[str]) -> None:
    """Stop when ``run`` already holds a model trained with other settings than ``overrides`` ask for (e.g.
    another ``--families`` β into the same ``--out``): it would otherwise be reused as if it were the one asked."""
    from lavid.core.cli import DEFAULT_CONFIG
    from lavid.core.config import flatten, load_config, load_yaml, to_dict
    from lavid.training.train_config import TrainConfig

    if not (run / "config.yaml").exists() or not trained_steps(run):
        return
    wanted = to_dict(load_config(TrainConfig, DEFAULT_CONFIG, overrides))
    have = load_yaml(run / "config.yaml")
    keys = {k: v for k, v in flatten({"model": wanted["model"]}).items() if k != "model.action_dim"}  # resolved later
    keys.update({f"data.{k}": wanted["data"][k] for k in ("data", "frames", "frame_stride")}, seed=wanted["seed"])
    present = {**flatten({"model": have.get("model", {}), "data": have.get("data", {})}), "seed": have.get("seed")}
    for spec in (keys, present):  # the same datasets, named relative or absolute
        spec["data.data"] = _resolved_sources(spec.get("data.data"))
    differ = [f"{key} {present[key]!r} (asked {value!r})" for key, value in keys.items()
              if key in present and present[key] != value]  # a key the run's version did not have: its default
    if differ:
        raise RuntimeError(f"{run} holds a model trained with other settings: {'; '.join(differ[:4])}; remove it "
                           "or plan into another --out")


def _resolved_sources(data: str | None) -> str | None:
    """``data.data`` with every path resolved (``A,B:2`` → ``/abs/A,/abs/B:2``)."""
    from lavid.data.data_config import DataConfig

    if not data:
        return data
    return ",".join(str(Path(path).resolve()) + (f":{weight:g}" if weight != 1 else "")
                    for path, weight in DataConfig(data=data).sources())


def _data_summary(data: str) -> str:
    """``4,000 random-policy episodes (160,000 stored steps)`` of every dataset of ``data`` (``data.data``)."""
    from lavid.data.clips import open_meta
    from lavid.data.data_config import DataConfig

    metas = [open_meta(path) for path, _ in DataConfig(data=data).sources()]
    episodes = sum(m.get("counts", {}).get("episodes", 0) for m in metas)
    steps = sum(m.get("counts", {}).get("steps", 0) for m in metas)
    policies = sorted({policy for m in metas for policy in m.get("policies", [m.get("policy", "?")])})
    return f"{episodes:,} {'/'.join(policies)}-policy episodes ({steps:,} stored steps)"


def write_gif(path: Path, frames, goal) -> None:
    """The executed frames ``[T, 3, H, W]`` beside the goal image, at twice the size."""
    import imageio.v2 as imageio
    import numpy as np

    pictures = [np.concatenate([frame, goal], axis=-1).transpose(1, 2, 0) for frame in frames]
    pictures = [np.kron(p, np.ones((2, 2, 1), np.uint8)) for p in pictures]  # 2x: 64 px is small on a screen
    imageio.mimsave(path, pictures, duration=0.25, loop=0)


def format_table(rows: list[dict]) -> str:
    return markdown_table(
        ["method", "labeled transitions", "final distance (mean ± std)", "Δxyz", "success", "start distance", "wall"],
        [[r["method"], r["labeled_transitions"], f"{r['final_distance_mean']:.4f} ± {r['final_distance_std']:.4f}",
          f"{r['delta_xyz_mean']:.4f}", f"{r['success_rate']:.2f}", f"{r['start_distance_mean']:.4f}",
          f"{r['wall_s']:.0f} s"] for r in rows])


def _latent_runs(p: PlanPreset, s: PlanSettings, out: Path, data: str) -> list[Path]:
    """The given latent runs, or one trained here per ``p.families`` entry."""
    if s.latent_runs:
        return [Path(r) for r in s.latent_runs]
    runs = []
    for entry in [f for f in p.families.split(",") if f]:
        family, _, extra = entry.partition(":")
        overrides = [o for o in extra.split(";") if o]
        name = "_".join([family] + [o.rpartition(".")[2].replace("=", "") for o in overrides])
        runs.append(out / "runs" / name)
        train_world_model(runs[-1], data, p.train_steps, [f"model.latent.family={family}", *overrides,
                                                           *p.override_list()], p.seed, p.encoder_steps,
                          p.feature_cache)
    return runs


def controller_folder(p: PlanPreset) -> str:
    """The run's subfolder of the controller ``p`` asks for: ``controller``, plus each setting that differs from
    :class:`PlanPreset`'s default (``controller_labels1_mlp``), so that other labels or another controller are
    fit anew instead of reusing one fit with other settings."""
    default = PlanPreset()
    parts = [f"labels{p.labeled_fraction:g}" if p.labeled_fraction != default.labeled_fraction else "",
             p.controller if p.controller != default.controller else "",
             f"steps{p.controller_steps}" if p.controller_steps != default.controller_steps else "",
             f"prediction{p.controller_prediction:g}" if p.controller_prediction else "",
             "previous" if p.controller_previous else "",
             f"dropout{p.controller_dropout:g}" if p.controller_dropout else "",
             f"imagined{p.controller_imagined}" if p.controller_imagined else "",
             f"layerdrop{p.controller_layer_dropout:g}" if p.controller_layer_dropout else "",
             f"wd{p.controller_weight_decay:g}" if p.controller_weight_decay != default.controller_weight_decay else "",
             f"pseudo{p.controller_pseudo_labels:g}" if p.controller_pseudo_labels else "",
             f"val{p.controller_validation:g}" if p.controller_validation else ""]
    return "_".join(["controller", *[part for part in parts if part]])


def _controlled(p: PlanPreset, run: Path, action_dim: int, progress: bool):
    """A latent run's controller (fit here when missing): ``(method name, labeled transitions, dynamics)``."""
    from lavid.planning.controller import ControllerConfig
    from lavid.planning.dynamics import ActionDynamics
    from lavid.planning.fit_controller import ControllerTrainConfig, load_controller, train_controller
    from lavid.training.runs import load_run

    controller_dir = run / controller_folder(p)
    if not (controller_dir / "metrics.json").exists():
        train_controller(ControllerTrainConfig(
            run=str(run), out_dir=str(controller_dir), labeled_fraction=p.labeled_fraction,
            controller=ControllerConfig(variant=p.controller, previous_action=p.controller_previous,
                                        horizon=max(ControllerConfig.horizon, p.horizon),
                                        dropout=p.controller_layer_dropout),
            steps=p.controller_steps, weight_decay=p.controller_weight_decay,
            pseudo_labeled_fraction=p.controller_pseudo_labels, validation_fraction=p.controller_validation,
            seed=p.seed,
            prediction_weight=p.controller_prediction, history_dropout=p.controller_dropout,
            imagined_rounds=p.controller_imagined, progress=progress))
    summary = json.loads((controller_dir / "metrics.json").read_text())
    controller, _ = load_controller(controller_dir)
    loaded = load_run(run)
    latent = loaded.config.model.latent
    detail = f" β {latent.beta:g}" if latent.family == "noisy" else ""
    name = f"latent {latent.family}{detail} + controller"
    fit_r2 = f" (its fit episodes: {summary['latent_r2_fit']:.2f})" if "latent_r2_fit" in summary else ""
    print(f"{name}: controller latent R² {summary['latent_r2']:.2f}{fit_r2}, rollout ÷ IDM latents "
          f"{summary['rollout_ratio']:.2f}, action gain {summary['action_gain']:.2f} "
          f"({summary['labeled_transitions']} labeled transitions"
          + (f"; the fit's step {summary['kept_step']} kept by its held-back episodes" if summary.get("kept_step")
             else "") + ")", flush=True)
    return name, summary["labeled_transitions"], ActionDynamics(loaded.model, controller, action_dim,
                                                                precision=p.precision)


def _prepare(p: PlanPreset, s: PlanSettings, episode_len: int, size: int):
    """What both protocols start with: the torch threads, the output folder, the planner's config and the
    training data (``s.train_data``: one dataset or several, ``A,B[:weight]`` as ``data.data``; else random-policy
    episodes built into ``OUT/data``) as ``data.data``'s string of resolved paths, with the first one's metadata."""
    import torch

    from lavid.core.threads import usable_cores
    from lavid.data.clips import open_meta
    from lavid.data.data_config import DataConfig
    from lavid.data.goals import episode_table
    from lavid.data.sim import SimEnv, ensure_renderer
    from lavid.planning.planner import PlannerConfig

    torch.set_num_threads(usable_cores())
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    planner = PlannerConfig(method=p.planner, samples=p.samples, elites=min(p.elites, p.samples),
                            iterations=p.iterations, horizon=p.horizon)
    planner.validate("planner")
    ensure_renderer()
    view = SimEnv(s.task, seed=0, size=8, camera=p.camera or None)  # an unknown camera stops before any work
    wanted = str(view.camera)  # as the episodes record it ("0", "front_close", "top_close")
    view.close()
    if not s.train_data:
        build_data(out / "data", s.task, p.train_episodes, episode_len, "random", p.seed, p.action_repeat, s.progress,
                   size, p.camera)
    sources = DataConfig(data=s.train_data or str(out / "data")).sources()
    metas = []
    for path, _ in sources:
        meta = open_meta(path)
        if meta.get("kind") != "trajectory" or s.task not in meta.get("tasks", [s.task]):
            raise ValueError(f"{path} holds no {s.task} trajectories (tasks: {meta.get('tasks')})")
        table = episode_table(path)
        seen = sorted({c for t, c in zip(table["task"], table["camera"]) if t == s.task})
        if seen != [wanted]:  # goals rendered from one camera, a model trained on another: a silent mismatch
            raise ValueError(f"{path} was recorded from camera {', '.join(seen)}, the preset plans from {wanted!r} "
                             "(--camera)")
        metas.append(meta)
    for key in ("action_repeat", "size"):  # the held-out pairs are rendered as the (first) training data was
        if len({m.get(key) for m in metas}) > 1:
            raise ValueError(f"the training datasets differ in {key}: "
                             + ", ".join(f"{path} {m.get(key)}" for (path, _), m in zip(sources, metas)))
    return out, planner, _resolved_sources(s.train_data or str(out / "data")), metas[0]


def run_planning(p: PlanPreset, s: PlanSettings) -> Path:
    """Run (or finish) the comparison of ``p.protocol`` into ``s.out``; returns the path of ``results.md``."""
    return run_anchors(p, s) if p.protocol == "anchors" else run_goal_episodes(p, s)


def run_goal_episodes(p: PlanPreset, s: PlanSettings) -> Path:
    """The earlier protocol: goal episodes of smooth random motion, start = stored step 0, goal = step
    ``goal_steps``; every method acts ``mpc_steps`` steps, replanning every step.

    Raises:
        ValueError, RunError, ConfigError, DatasetFormatError, FileNotFoundError, RuntimeError: a bad setting or
        input, or a stage that failed; each a one-line message.
    """
    import torch

    from lavid.data.sim import SimEnv
    from lavid.planning.dynamics import ActionDynamics
    from lavid.planning.fit_controller import count_transitions, split_episodes
    from lavid.planning.mpc import PlanningAgent, RandomAgent, ReplayAgent, run_closed_loop
    from lavid.planning.reaching import load_goals, reaching_metrics, start_envs
    from lavid.training.runs import RunError, load_run

    out, planner, data, meta = _prepare(p, s, episode_len=50, size=64)
    steps = p.mpc_steps or p.goal_steps
    threshold = p.threshold or THRESHOLD.get(s.task, 0.05)
    repeat = int(meta.get("action_repeat", p.action_repeat))
    goal_dir = out / "goals"  # goals as the training data was recorded: same size, same action repeat
    build_data(goal_dir, s.task, p.episodes, p.goal_steps + 1, "smooth", p.seed + 1000, repeat, s.progress,
               int(meta.get("size", 64)), p.camera)
    goals = load_goals(goal_dir, s.task, p.episodes, p.goal_steps)

    latent_runs = _latent_runs(p, s, out, data)
    action_run = Path(s.action_run) if s.action_run else out / "runs" / "action"
    if not s.action_run:
        train_world_model(action_run, data, p.train_steps, ["model.condition=action", *p.override_list()], p.seed,
                          p.encoder_steps, p.feature_cache)

    env = SimEnv(goals.task, seed=0, size=8, camera=goals.camera)  # for the action bounds only
    low, high, action_dim = env.action_low, env.action_high, env.action_dim
    env.close()
    goal_frames = torch.from_numpy(goals.goal_frames)
    action_loaded = load_run(action_run)
    if not action_loaded.model.action_conditioned:
        raise RunError(f"{action_run} is not conditioned on actions (model.condition=action)")
    train_episodes, _ = split_episodes(action_loaded.config.data.data, action_loaded.config.data.holdout_fraction)
    all_labels = count_transitions(train_episodes)
    methods = [_controlled(p, run, action_dim, s.progress) for run in latent_runs]
    methods.append(("action-conditioned world model", all_labels,
                    ActionDynamics(action_loaded.model, None, action_dim, precision=p.precision)))
    methods += [("random actions", 0, "random"), ("oracle: replay the stored actions", 0, "oracle")]

    def agent_for(entry):
        if entry == "random":
            return RandomAgent(low, high, p.seed)
        if entry == "oracle":
            return ReplayAgent(goals.oracle_actions)
        return PlanningAgent(entry, goal_frames, low, high, planner, p.seed, context=p.context,
                             every_step=p.cost_steps == "every")

    rows = []
    for name, labels, entry in methods:
        start = time.time()
        envs = start_envs(goals, repeat)
        episodes = run_closed_loop(envs, agent_for(entry), steps, progress=s.progress, desc=name)
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
    header = (f"{s.task}: {p.episodes} episodes, goal {p.goal_steps} steps away, {steps} steps of "
              f"{p.planner.upper()} ({planner.samples} samples, {planner.elites} elites, {planner.iterations} "
              f"iterations, horizon {planner.horizon}, context {p.context}, cost at {p.cost_steps} step); success "
              f"within {threshold} m; the action-conditioned model used {all_labels} labeled transitions")
    setup = {**asdict(s), **asdict(p)}
    paths = write_results(out, header + "\n\n" + text, rows, {"setup": setup, "rows": rows})
    print(header)
    print(text)
    return paths["md"]


# ----------------------------------------------------------------------------------- the anchors' protocol


def _learned_dynamics(p: PlanPreset, s: PlanSettings, method: str, data: str, action_dim: int, progress: bool):
    """``(labeled transitions, dynamics, run folder)`` of ``action`` or ``latent_<family>`` (trained here when
    missing)."""
    from lavid.planning.dynamics import ActionDynamics
    from lavid.planning.fit_controller import count_transitions, split_episodes
    from lavid.training.runs import load_run

    out = Path(s.out)
    if method == "action":
        run = Path(s.action_run) if s.action_run else out / "runs" / "action"
        if not s.action_run:
            train_world_model(run, data, p.train_steps, ["model.condition=action", f"model.encoder.img_size={p.size}",
                                                         *p.override_list()],
                              p.seed, p.encoder_steps, p.feature_cache)
        loaded = load_run(run)
        train_episodes, _ = split_episodes(loaded.config.data.data, loaded.config.data.holdout_fraction)
        dynamics = ActionDynamics(loaded.model, None, action_dim, precision=p.precision)
        return count_transitions(train_episodes), dynamics, run
    family = method.removeprefix("latent_")
    extra = {e.partition(":")[0]: [o for o in e.partition(":")[2].split(";") if o]
             for e in p.families.split(",") if e}
    run = out / "runs" / method
    train_world_model(run, data, p.train_steps, [f"model.latent.family={family}", f"model.encoder.img_size={p.size}",
                                                 *p.override_list(), *extra.get(family, [])],
                      p.seed, p.encoder_steps, p.feature_cache)
    _, labels, dynamics = _controlled(p, run, action_dim, progress)
    return labels, dynamics, run


def heldout_figures(run: Path) -> dict[str, float | str]:
    """The run's last held-out evaluation: one-step error ÷ copy (``heldout_ratio``) and the condition's gain
    (``latent_gain``: error with another clip's conditions ÷ with its own); empty when it never evaluated."""
    last = {}
    path = run / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if "eval/ratio" in row:
                last = row
    return {"heldout_ratio": last.get("eval/ratio", ""), "latent_gain": last.get("eval/latent_gain", "")}


def run_anchors(p: PlanPreset, s: PlanSettings) -> Path:
    """The anchors' protocol (LeWorldModel; DINO-WM): ``p.pairs`` start / goal pairs drawn from held-out
    trajectories of the training data's own behaviour, the goal ``p.goal_offset`` stored steps after the start;
    every method acts ``p.budget`` steps, planning ``p.horizon`` steps and executing ``p.receding`` of them
    before it replans, once per seed of ``p.seeds`` on the same pairs. Success on reacher is LeWorldModel's
    (:func:`lavid.planning.reaching.qpos_success`: every joint within ``p.success_qpos`` rad of the goal at
    any control step); elsewhere the effector within the task's threshold at any stored step.

    Each finished (method, seed) is a row of ``runs.jsonl`` (:class:`~lavid.experiments.runner.JobLog`), reused
    when the command is run again with the same settings.
    """
    import numpy as np
    import torch

    from lavid.data.sim import SimEnv
    from lavid.experiments.runner import JobLog
    from lavid.planning.cost_ranking import cost_spearman, heldout_states
    from lavid.planning.mpc import PlanningAgent, RandomAgent, ReplayAgent, run_closed_loop
    from lavid.planning.reaching import draw_pairs, qpos_success, start_envs, wilson_interval
    from lavid.planning.simulator_model import SimulatorAgent

    out, planner, data, meta = _prepare(p, s, episode_len=p.episode_len, size=p.size)
    repeat, size = int(meta.get("action_repeat", p.action_repeat)), int(meta.get("size", p.size))
    heldout = out / "heldout"  # the same behaviour, a seed of its own: no model trains on these episodes
    build_data(heldout, s.task, p.heldout_episodes, p.episode_len, "random", p.seed + 1000, repeat, s.progress, size,
               p.camera)
    pairs = draw_pairs(heldout, s.task, p.pairs, p.goal_offset, seed=p.seed, history=p.start_history)
    history = (pairs.history_frames, pairs.history_actions) if p.start_history else None
    env = SimEnv(s.task, seed=0, size=8, camera=pairs.camera)  # for the bounds and joint count only
    low, high, action_dim, nq = env.action_low, env.action_high, env.action_dim, env.physics.model.nq
    env.close()
    reacher = s.task.startswith("reacher-")
    threshold = p.threshold or THRESHOLD.get(s.task, 0.05)
    criterion = (f"every joint within {p.success_qpos} rad of the goal's at any control step (LeWorldModel's "
                 "qpos_match)" if reacher else f"the effector within {threshold} m of the goal's at any step")
    # how far the goals are: a pair that starts inside the criterion counts as a success for every method
    start_distance = np.linalg.norm(pairs.start_effector - pairs.goal_effector, axis=-1)
    trivial = (qpos_success(pairs.start_qpos[:, None], pairs.goal_qpos, p.success_qpos) if reacher
               else start_distance < threshold)

    # a row is one (method, seed): adding methods or seeds reuses the rows already there; a key added after rows
    # were written signs only when it is set, so that those rows stay reusable
    signed = {k: v for k, v in asdict(p).items()
              if k not in ("methods", "seeds") and not (k in UNSIGNED_DEFAULTS and v == UNSIGNED_DEFAULTS[k])}
    log = JobLog(out / "runs.jsonl", {"task": s.task, "preset": signed, "data": data,
                                      "action_run": s.action_run})
    rows = [r for r in log.rows() if r["method"] in p.method_list() and r["seed"] in p.seeds]
    done = {(r["method"], r["seed"]) for r in rows}
    states = None
    summaries = {}
    for method in p.method_list():
        labels, dynamics, spearman, figures = 0, None, "", {"heldout_ratio": "", "latent_gain": ""}
        if method not in FIXED_METHODS:  # feature_oracle: the action-conditioned model's encoder as the cost
            labels, dynamics, run = _learned_dynamics(p, s, "action" if method == "feature_oracle" else method, data,
                                                      action_dim, s.progress)
            figures = heldout_figures(run)
            if states is None:
                states = heldout_states(heldout, nq)
            frames, qpos, groups = states
            spearman = cost_spearman(dynamics.encode, frames, qpos, pairs.goal_frames, pairs.goal_qpos, groups,
                                     pairs.episodes)
            print(f"{method}: cost Spearman {spearman:.3f} (feature distance vs wrapped joint distance, the goal's "
                  "held-out episode)", flush=True)
        summaries[method] = {"labeled_transitions": labels, "cost_spearman": spearman, **figures}
        for seed in p.seeds:
            if (method, seed) in done:
                continue
            start = time.time()
            envs = start_envs(pairs, repeat)
            if method == "oracle":
                agent = SimulatorAgent(envs, pairs.goal_qpos, low, high, planner, seed, receding=p.receding,
                                       every_step=p.cost_steps == "every")
            elif method == "feature_oracle":
                shadows = start_envs(pairs, repeat)
                goal_features = dynamics.encode(torch.from_numpy(pairs.goal_frames)[:, None])[:, 0]
                agent = SimulatorAgent(envs, pairs.goal_qpos, low, high, planner, seed, receding=p.receding,
                                       features=(shadows, goal_features, dynamics.encode))
            elif method == "replay":
                agent = ReplayAgent(pairs.oracle_actions)
            elif method == "random":
                agent = RandomAgent(low, high, seed)
            else:
                agent = PlanningAgent(dynamics, torch.from_numpy(pairs.goal_frames), low, high, planner, seed,
                                      context=p.context, every_step=p.cost_steps == "every", receding=p.receding)
            seen = history if isinstance(agent, PlanningAgent) else None  # what led to the start: learned models
            episodes = run_closed_loop(envs, agent, p.budget, progress=s.progress, desc=f"{method} seed {seed}",
                                       history=seen)
            for env in envs + (shadows if method == "feature_oracle" else []):
                env.close()
            if reacher:
                success = qpos_success(episodes.qpos, pairs.goal_qpos, p.success_qpos)
            else:
                reached = np.linalg.norm(episodes.effector - pairs.goal_effector[:, None], axis=-1)
                success = (reached < threshold).any(axis=1)
            final = episodes.effector[:, -1] - pairs.goal_effector
            row = {"method": method, "seed": seed, "successes": int(success.sum()), "pairs": int(len(success)),
                   "final_distance": np.linalg.norm(final, axis=-1).tolist(),
                   "delta_xyz": np.abs(final).mean(axis=-1).tolist(),
                   "plan_seconds": getattr(agent, "plan_seconds", []), "wall_s": round(time.time() - start, 1)}
            rows.append(log.append(row))
            print(f"{method} seed {seed}: success {row['successes']}/{row['pairs']}, final distance "
                  f"{np.mean(row['final_distance']):.4f} ({row['wall_s']:.0f} s)", flush=True)
            if seed == p.seeds[0]:
                write_gif(out / f"{method}.gif", episodes.frames[0], pairs.goal_frames[0])

    table = []
    for method in p.method_list():
        mine = [r for r in rows if r["method"] == method]
        successes, trials = sum(r["successes"] for r in mine), sum(r["pairs"] for r in mine)
        low_ci, high_ci = wilson_interval(successes, trials)
        seconds = [t for r in mine for t in r["plan_seconds"]]
        table.append({"method": method, "success_rate": successes / max(trials, 1), "success_ci_low": low_ci,
                      "success_ci_high": high_ci,
                      "final_distance_mean": float(np.mean([d for r in mine for d in r["final_distance"]])),
                      "delta_xyz_mean": float(np.mean([d for r in mine for d in r["delta_xyz"]])),
                      "plan_seconds_mean": float(np.mean(seconds)) if seconds else "",
                      "labeled_transitions": summaries[method]["labeled_transitions"],
                      "cost_spearman": summaries[method]["cost_spearman"],
                      "heldout_ratio": summaries[method]["heldout_ratio"],
                      "latent_gain": summaries[method]["latent_gain"], "trials": trials, "seeds": len(mine)})
    header = (f"{s.task}, the anchors' protocol: {p.pairs} start / goal pairs from {p.heldout_episodes} held-out "
              f"random-policy episodes (no model trained on them), goal {p.goal_offset} stored steps after the start "
              f"(action repeat {repeat}: {p.goal_offset * repeat} control steps), budget {p.budget} steps, "
              f"{p.planner.upper()} {planner.samples} samples / {planner.elites} elites / {planner.iterations} "
              f"iterations, horizon {planner.horizon}, receding horizon {p.receding}, seeds {p.seeds}; "
              f"success: {criterion}; the effector starts {start_distance.mean():.3f} m from its goal (mean), "
              f"{int(trivial.sum())} of {len(trivial)} pairs already inside the criterion. Training data: "
              f"{_data_summary(data)} at {size}×{size}, {p.train_steps} world-model steps.")
    text = markdown_table(
        ["method", "success (95 % CI)", "final distance (m)", "Δxyz (m)", "s a plan", "labeled transitions",
         "cost Spearman", "held-out ÷ copy", "gain", "trials"],
        [[r["method"], f"{r['success_rate']:.2f} ({r['success_ci_low']:.2f}–{r['success_ci_high']:.2f})",
          f"{r['final_distance_mean']:.4f}", f"{r['delta_xyz_mean']:.4f}", cell(r["plan_seconds_mean"], "{:.2f}"),
          r["labeled_transitions"], cell(r["cost_spearman"], "{:.3f}"), cell(r["heldout_ratio"], "{:.3f}"),
          cell(r["latent_gain"], "{:.2f}"), r["trials"]] for r in table])
    paths = write_results(out, header + "\n\n" + text, table, {"setup": {**asdict(s), **asdict(p)}, "rows": table},
                          columns=CSV_COLUMNS)
    print(header)
    print(text)
    return paths["md"]


def parse_points(text: str) -> list[tuple[int, int]]:
    """``"200x1000,1000x5000"`` -> ``[(200, 1000), (1000, 5000)]``: (training episodes, world-model steps)."""
    points = []
    for part in [t.strip() for t in text.split(",") if t.strip()]:
        episodes, sep, steps = part.partition("x")
        check(bool(sep) and episodes.isdigit() and steps.isdigit() and int(episodes) >= 1 and int(steps) >= 1,
              "scale", f"each point is EPISODESxSTEPS with both >= 1 (e.g. 200x1000), got {part!r}")
        points.append((int(episodes), int(steps)))
    check(bool(points), "scale", "needs at least one EPISODESxSTEPS point")
    return points


def run_scale(p: PlanPreset, s: PlanSettings, points: list[tuple[int, int]]) -> Path:
    """Success against data and training: the anchors' protocol once per (training episodes, world-model
    steps) point, every point on the same held-out pairs and seeds. Point ``(E, S)`` runs in ``OUT/e{E}_s{S}``
    (its own ``results.*``, resumable as any run); the ``E`` training episodes are built once into
    ``OUT/data_e{E}`` and shared by every point that uses them. ``OUT/results.*`` holds one row per point and
    method; returns the path of ``results.md``.
    """
    import dataclasses

    if s.train_data or s.action_run or s.latent_runs:
        raise ValueError("a scale sweep builds its own data and trains its own models: drop --train-data, "
                         "--action-run and --latent-runs")
    if p.protocol != "anchors":
        raise ValueError("a scale sweep runs the anchors' protocol (--protocol anchors)")
    out = Path(s.out)
    rows = []
    for episodes, steps in points:
        data = out / f"data_e{episodes}"
        build_data(data, s.task, episodes, p.episode_len, "random", p.seed, p.action_repeat, s.progress, p.size,
                   p.camera)
        point = dataclasses.replace(p, train_episodes=episodes, train_steps=steps)
        where = out / f"e{episodes}_s{steps}"
        run_anchors(point, dataclasses.replace(s, out=str(where), train_data=str(data)))
        for row in json.loads((where / "results.json").read_text())["rows"]:
            rows.append({"train_episodes": episodes, "transitions": episodes * p.episode_len, "train_steps": steps,
                         **row})
    header = (f"{s.task}, success against data and training (the anchors' protocol, {p.pairs} pairs × seeds "
              f"{p.seeds}, the same pairs at every point): training episodes of {p.episode_len} steps, world-model "
              "steps. Each point's own table is in e<EPISODES>_s<STEPS>/results.md.")
    text = markdown_table(
        ["episodes", "transitions", "steps", "method", "success (95 % CI)", "final distance (m)", "cost Spearman",
         "held-out ÷ copy", "gain", "s a plan"],
        [[r["train_episodes"], f"{r['transitions']:,}", r["train_steps"], r["method"],
          f"{r['success_rate']:.2f} ({r['success_ci_low']:.2f}–{r['success_ci_high']:.2f})",
          f"{r['final_distance_mean']:.4f}", cell(r["cost_spearman"], "{:.3f}"), cell(r["heldout_ratio"], "{:.3f}"),
          cell(r["latent_gain"], "{:.2f}"), cell(r["plan_seconds_mean"], "{:.1f}")] for r in rows])
    paths = write_results(out, header + "\n\n" + text, rows, {"setup": {**asdict(s), **asdict(p)}, "rows": rows},
                          columns=("train_episodes", "transitions", "train_steps", *CSV_COLUMNS))
    print(header)
    print(text)
    return paths["md"]


CSV_COLUMNS = ("method", "success_rate", "success_ci_low", "success_ci_high", "final_distance_mean",
               "plan_seconds_mean", "labeled_transitions", "cost_spearman")
"""The anchors' protocol's ``results.csv`` columns, first and in this order."""
