"""Simulator trajectories with action labels, written in the same clip-dataset format as videos.

Each episode is rolled out in a worker (one renderer each) and stored step by step: the frame seen
before the action, the action, the reward it earned, the proprioceptive state, the full physics state
(to re-render any step later) and, for the Jaco arm, the pinch-site and target positions in metres.
Clips of ``clip_len`` steps are index rows into the stored episodes, so they cost no copies.
"""

from __future__ import annotations

import logging
import multiprocessing
import zlib
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from lavid.data.policies import check_policy_name, make_policy
from lavid.data.sim import SimEnv, check_task, ensure_renderer
from lavid.data.store import ChunkedWriter, ItemResult, clip_features, episode_features, prepare_output, read_meta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """Episodes to collect for one task seen from one camera (``policy``: this spec's behaviour policy;
    ``action_repeat``: control steps per stored step for this spec; ``None`` for either is the dataset's)."""

    task: str
    episodes: int
    camera: int | str | None = None
    episode_len: int | None = None
    policy: str | None = None
    action_repeat: int | None = None

    def __post_init__(self) -> None:
        if self.policy is not None:
            check_policy_name(self.policy)
        if self.action_repeat is not None and self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1 for {self.task}, got {self.action_repeat}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1 for {self.task}, got {self.episodes}")
        if self.episode_len is not None and self.episode_len < 1:
            raise ValueError(f"episode_len must be >= 1, got {self.episode_len}")


@dataclass(frozen=True)
class TrajectoryConfig:
    """How episodes are collected and cut into clips."""

    tasks: tuple[TaskSpec, ...]
    policy: str = "smooth"
    size: int = 64
    action_repeat: int = 2
    clip_len: int = 16
    stride: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("no tasks given")
        for spec in self.tasks:
            check_task(spec.task)
        check_policy_name(self.policy)
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {self.action_repeat}")
        if self.clip_len < 1 or (self.stride is not None and self.stride < 1):
            raise ValueError("clip_len and stride must be >= 1")


PRESETS: dict[str, tuple[TaskSpec, ...]] = {
    # A small stand-in for in-the-wild video: several bodies and motions, no common embodiment, chosen so
    # the action shows (BENCHMARKS.md, "Features that see the action"): mostly white-noise actions, which
    # history cannot predict, some temporally smooth ones; with action repeat 4 a step moves the body
    # visibly. 58 training episodes per DMControl task: with 14, the held-out poses were not covered and
    # every figure was lower (BENCHMARKS.md, "The default data at 4x the DMControl episodes"). Jaco renders
    # 7x slower than the others and stays at 12 episodes.
    # About 19,400 frames; ~4 minutes on 2 CPU cores (see BENCHMARKS.md).
    "mix": (
        TaskSpec("reacher-easy", 80, camera=0, episode_len=50, policy="random"),
        TaskSpec("reacher-easy", 40, camera=0, episode_len=50, policy="smooth"),
        TaskSpec("walker-walk", 64, camera=0, episode_len=50, policy="random"),
        TaskSpec("cheetah-run", 64, camera=0, episode_len=50, policy="random"),
        TaskSpec("finger-spin", 64, camera=0, episode_len=50, policy="random"),
        TaskSpec("cartpole-swingup", 64, camera=0, episode_len=50, policy="smooth"),
        TaskSpec("jaco-reach", 12, camera=None, episode_len=50, policy="random"),
    ),
}
PRESET_ACTION_REPEAT = {"mix": 4}
"""Control steps per stored step for each preset (``data_prep/dmc.py --preset`` uses it)."""

PRESET_CLIP_STRIDE = {"mix": 2}
"""Steps between clip starts for each preset. Clips overlap: training reads the first ``data.frames`` of
a clip, so with a clip starting every ``clip_len`` steps the rest of each clip's frames were rendered and
never trained on; overlapping windows cost nothing to render (BENCHMARKS.md)."""


@dataclass(frozen=True)
class EpisodeJob:
    task: str
    camera: int | str | None
    index: int
    seed: int
    episode_len: int | None
    policy: str | None = None  # set only when its spec names a policy of its own
    action_repeat: int | None = None  # likewise

    @property
    def source(self) -> str:
        camera = "default" if self.camera is None else self.camera
        policy = "" if self.policy is None else f"/policy={self.policy}"
        repeat = "" if self.action_repeat is None else f"/repeat={self.action_repeat}"
        return f"sim:{self.task}/camera={camera}{policy}{repeat}/episode={self.index}"


def episode_seed(seed: int, task: str, camera: Any, index: int, policy: str | None = None,
                 action_repeat: int | None = None) -> int:
    """A seed for one episode that depends only on what it is, not on which worker runs it."""
    key = [seed, zlib.crc32(task.encode()), zlib.crc32(str(camera).encode()), index]
    if policy is not None:
        key.append(zlib.crc32(policy.encode()))
    if action_repeat is not None:
        key.append(1_000_003 * action_repeat)
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def episode_jobs(config: TrajectoryConfig) -> list[EpisodeJob]:
    return [
        EpisodeJob(spec.task, spec.camera, k,
                   episode_seed(config.seed, spec.task, spec.camera, k, spec.policy, spec.action_repeat),
                   spec.episode_len, spec.policy, spec.action_repeat)
        for spec in config.tasks
        for k in range(spec.episodes)
    ]


@dataclass
class Layout:
    """Column sizes shared by all tasks of a dataset (``None``: they differ, stored variable-length)."""

    action_dim: int | None
    state_dim: int | None
    physics_dim: int | None
    robot: bool
    fps: float | None
    dims: dict[str, dict[str, int]] = field(default_factory=dict)


def inspect_tasks(config: TrajectoryConfig) -> Layout:
    """Build each task once (checks cameras before any work) and read its column sizes."""
    dims: dict[str, dict[str, Any]] = {}
    rates = set()
    for spec in config.tasks:
        repeat = spec.action_repeat or config.action_repeat
        env = SimEnv(spec.task, seed=0, size=8, camera=spec.camera, action_repeat=repeat)
        try:
            record = env.reset()
            dims[spec.task] = {
                "action": env.action_dim,
                "state": int(record.state.shape[0]),
                "physics": int(record.physics.shape[0]),
                "fps": env.control_fps,
                "control_steps": env.max_steps * repeat,  # the task's limit in physics control steps
            }
            rates.add(env.control_fps)
        finally:
            env.close()

    def common(key: str):
        values = {d[key] for d in dims.values()}
        return values.pop() if len(values) == 1 else None

    robot = any(spec.task.startswith("jaco") for spec in config.tasks)
    return Layout(common("action"), common("state"), common("physics"), robot,
                  rates.pop() if len(rates) == 1 else None, dims)


def features(config: TrajectoryConfig, layout: Layout) -> dict[str, Any]:
    import datasets

    value = datasets.Value

    def vector(dtype: str, length: int | None):
        return datasets.Sequence(value(dtype), length=length if length is not None else -1)

    steps = {
        "frame": datasets.Array3D(shape=(3, config.size, config.size), dtype="uint8"),
        "step": value("int32"),
        "action": vector("float32", layout.action_dim),
        "reward": value("float32"),
        "state": vector("float32", layout.state_dim),
        "physics": vector("float64", layout.physics_dim),
    }
    if layout.robot:
        steps["pinch"] = vector("float32", 3)
        steps["target"] = vector("float32", 3)
    return {
        "clips": clip_features(),
        "episodes": episode_features("trajectory"),
        "steps": datasets.Features(steps),
    }


def rollout(job: EpisodeJob, config: TrajectoryConfig, robot_columns: bool) -> ItemResult:
    """Collect one episode; an episode that fails (e.g. unstable physics) is reported, not raised."""
    try:
        env = SimEnv(job.task, seed=job.seed, size=config.size, camera=job.camera,
                     action_repeat=job.action_repeat or config.action_repeat)
    except Exception as error:
        return ItemResult(job.source, skip={"reason": "error", "detail": f"{type(error).__name__}: {error}"})
    try:
        rng = np.random.default_rng(job.seed)
        record = env.reset()
        policy_name = job.policy or config.policy
        policy = make_policy(policy_name, record.state.shape[0], env.action_low, env.action_high)
        policy.reset(rng)
        length = min(job.episode_len or env.max_steps, env.max_steps)
        columns: dict[str, list] = {k: [] for k in ("frame", "action", "reward", "state", "physics")}
        if robot_columns:
            columns["pinch"], columns["target"] = [], []
        for _ in range(length):
            action = policy.act(record.state)
            reward, done = env.step(action)
            columns["frame"].append(record.frame)
            columns["action"].append(np.clip(action, env.action_low, env.action_high))
            columns["reward"].append(reward)
            columns["state"].append(record.state)
            columns["physics"].append(record.physics)
            if robot_columns:
                nan3 = np.full(3, np.nan, np.float32)
                columns["pinch"].append(record.pinch if record.pinch is not None else nan3)
                columns["target"].append(record.target if record.target is not None else nan3)
            if done:
                break
            record = env.observe()
        steps_taken = len(columns["frame"])
        steps: dict[str, Any] = {
            "frame": np.stack(columns["frame"]),
            "step": np.arange(steps_taken, dtype=np.int32),
            "action": np.stack(columns["action"]).astype(np.float32),
            "reward": np.asarray(columns["reward"], dtype=np.float32),
            "state": np.stack(columns["state"]).astype(np.float32),
            "physics": np.stack(columns["physics"]).astype(np.float64),
        }
        if robot_columns:
            steps["pinch"] = np.stack(columns["pinch"]).astype(np.float32)
            steps["target"] = np.stack(columns["target"]).astype(np.float32)
        fps = env.control_fps
        step = config.stride or config.clip_len
        clips = [
            {"source": job.source, "start_frame": s, "start": s / fps, "fps": fps, "num_frames": config.clip_len}
            for s in range(0, steps_taken - config.clip_len + 1, step)
        ]
        episode = {
            "source": job.source,
            "task": job.task,
            "camera": str(env.camera),
            "seed": job.seed,
            "policy": policy_name,
            "return": float(steps["reward"].sum()),
            "fps": fps,
            "action_dim": env.action_dim,
            "state_dim": int(steps["state"].shape[1]),
        }
        return ItemResult(job.source, clips=clips, episode=episode, steps=steps)
    except Exception as error:
        return ItemResult(job.source, skip={"reason": "error", "detail": f"{type(error).__name__}: {error}"})
    finally:
        env.close()


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    for noisy in ("absl", "OpenGL"):  # dm_control's model-compiler deprecation chatter, per worker
        logging.getLogger(noisy).setLevel(logging.ERROR)


def build_trajectory_dataset(
    out: str,
    config: TrajectoryConfig,
    workers: int = 0,
    overwrite: bool = False,
    chunk_items: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect every episode of ``config`` into the dataset folder ``out`` (resumable per episode).

    Returns:
        The dataset's metadata (``lavid.json``).
    """
    from tqdm.auto import tqdm

    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    params = dataset_params(config)
    if prepare_output(out, params, overwrite=overwrite) == "done":
        log.info("%s is already complete: nothing to do", out)
        return {**read_meta(out), "already_complete": True}
    ensure_renderer()
    layout = inspect_tasks(config)
    jobs = episode_jobs(config)
    writer = ChunkedWriter(out, params, features(config, layout), chunk_items=chunk_items)
    todo = jobs[writer.items_done :]
    work = partial(rollout, config=config, robot_columns=layout.robot)
    def planned(job: EpisodeJob) -> int:  # frames the episode will store (its task may end it sooner)
        limit = layout.dims[job.task]["control_steps"] // (job.action_repeat or config.action_repeat)
        return min(job.episode_len or limit, limit)

    bar = tqdm(total=sum(map(planned, jobs)), initial=sum(map(planned, jobs[: writer.items_done])), unit="frame", desc="simulating", disable=not progress)
    pool = None
    if workers == 0:
        results = map(work, todo)
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
        results = pool.imap(work, todo, chunksize=1)
    try:
        for job, result in zip(todo, results):
            writer.add(result)
            bar.update(planned(job))
            if result.skip:
                log.warning("skipped %s: %s", result.source, result.skip["detail"])
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    meta = {
        "kind": "trajectory",
        "fps": layout.fps,
        "size": config.size,
        "clip_len": config.clip_len,
        "action_repeat": config.action_repeat,
        "policy": config.policy,
        "policies": sorted({spec.policy or config.policy for spec in config.tasks}),
        "tasks": sorted({spec.task for spec in config.tasks}),
        "task_dims": layout.dims,
        "materialized": True,
    }
    return writer.finalize(meta)


def dataset_params(config: TrajectoryConfig) -> dict[str, Any]:
    """What identifies a build of ``config`` (a complete dataset with other params is not reused)."""
    params = {"kind": "trajectory", **_jsonable(asdict(config))}
    for task in params["tasks"]:  # datasets built before per-task repeats existed keep their parameters
        if task.get("action_repeat") is None:
            task.pop("action_repeat", None)
    return params


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
