"""Simulated embodiments with real rendering: DeepMind Control Suite tasks and a Kinova Jaco arm.

One wrapper, :class:`SimEnv`, gives both the same interface: reset, step with action repeat, render a
square camera image, read the proprioceptive state, and save/restore the full simulator state so a
stored step can be rendered again later (goal images, planning).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

ROBOT_TASKS = {"jaco-reach": "reach_site_features"}
"""lavid name -> dm_control.manipulation environment (rendered by us at the requested size)."""

_REACHER_CLOSE = ((0.0, 0.0, 0.0), 0.55, 90.0, -90.0)
VIEWS = {"jaco-reach": {"overview": ((0.0, 0.0, 0.25), 1.1, 135.0, -30.0)},
         "reacher-easy": {"top_close": _REACHER_CLOSE}, "reacher-hard": {"top_close": _REACHER_CLOSE}}
"""Per task, named orbit cameras (``lookat`` xyz in m, distance m, azimuth °, elevation °) for views the
model does not define. Jaco's only fixed camera, ``front_close``, crops the arm (in about one start pose
in six it is out of frame, and the upper arm always is): ``overview`` shows the whole arm and the
target from every start pose. It is not the default: measured, it did not make the arm's pose linearly
readable from the features (BENCHMARKS.md, "Jaco's camera"). Reacher's ``top_close`` is its fixed top-down
camera (0.75 m up, 45° field of view: the whole 0.6 m arena) moved down to 0.55 m: the same orientation, the
arm 1.36x larger (it reaches 0.21 m from the centre; the view's half-width is 0.228 m), the arena's walls out
of the picture (BENCHMARKS.md, issue 34 part 7)."""

JACO_CAMERA = "front_close"
GL_BACKENDS = ("egl", "osmesa")


def parse_camera(camera: int | str) -> int | str:
    """A camera as written in a flag or an episode row (``"0"``, ``"front_close"``) as :class:`SimEnv` takes
    it: digits are a camera index, anything else a name."""
    return int(camera) if isinstance(camera, str) and camera.lstrip("-").isdigit() else camera


class SimError(Exception):
    """An unknown task, camera or a renderer that cannot start."""


def _default_gl() -> None:
    """Prepare a process for MuJoCo rendering; call before dm_control is first imported.

    dm_control chooses its GL backend when first imported: make it headless EGL unless told otherwise.
    Mesa's software renderer and triton (pulled in by torch's compiler stack, e.g. when timm imports
    torchvision) each bundle LLVM: importing triton after a GL context exists segfaults, while the other
    order works (torch 2.14 + Mesa llvmpipe). So triton, when installed, is loaded first.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    if "triton" not in sys.modules:
        import importlib.util

        if importlib.util.find_spec("triton") is not None:
            import triton  # noqa: F401


def suite_tasks() -> list[str]:
    _default_gl()
    from dm_control import suite

    return sorted(f"{domain}-{task}" for domain, task in suite.ALL_TASKS)


def task_names() -> list[str]:
    """Every valid task name: suite ``domain-task`` names and the robot tasks."""
    return suite_tasks() + sorted(ROBOT_TASKS)


def check_task(task: str) -> None:
    if task not in ROBOT_TASKS:
        domain, _, name = task.partition("-")
        _default_gl()
        from dm_control import suite

        if (domain, name) not in suite.ALL_TASKS:
            raise SimError(f"unknown task {task!r}; valid tasks: {', '.join(task_names())}")


def _render_probe(backend: str) -> str:
    """Try rendering one frame in a fresh process with ``MUJOCO_GL=backend``; return '' or the error."""
    code = (
        "from dm_control import suite\n"
        "env = suite.load('cartpole', 'balance', task_kwargs={'random': 0})\n"
        "env.reset(); assert env.physics.render(8, 8).shape == (8, 8, 3)\n"
    )
    env = {**os.environ, "MUJOCO_GL": backend}
    if backend == "osmesa":
        env["PYOPENGL_PLATFORM"] = "osmesa"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        return ""
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def ensure_renderer() -> str:
    """Pick a working headless MuJoCo renderer and export ``MUJOCO_GL`` for this process and its children.

    Tries ``$MUJOCO_GL`` if set, else EGL then OSMesa, each in a throwaway process. Call it before
    anything imports dm_control in this process (dm_control fixes its backend at import).

    Raises:
        SimError: no renderer starts; the message says what was tried and what to install.
    """
    if "dm_control.mujoco" in sys.modules:
        return os.environ.get("MUJOCO_GL", "")  # already chosen for this process
    requested = os.environ.get("MUJOCO_GL")
    candidates = (requested,) if requested else GL_BACKENDS
    failures = []
    for backend in candidates:
        error = _render_probe(backend)
        if not error:
            os.environ["MUJOCO_GL"] = backend
            return backend
        failures.append(f"MUJOCO_GL={backend}: {error}")
    raise SimError(
        "MuJoCo cannot render headless; tried " + "; ".join(failures) + ". Install Debian's libegl1 (for "
        "MUJOCO_GL=egl) or libosmesa6 (for MUJOCO_GL=osmesa), or unset MUJOCO_GL to try both."
    )


@dataclass
class StepRecord:
    """What the simulator shows before an action: image, proprioception, full state, task extras."""

    frame: np.ndarray  # [3, H, W] uint8
    state: np.ndarray  # [S] float32, flattened proprioceptive observation
    physics: np.ndarray  # [P] float64, enough to restore the simulator
    pinch: np.ndarray | None  # [3] float32 pinch-site position in metres (Jaco only)
    target: np.ndarray | None  # [3] float32 target position in metres (Jaco only)


class SimEnv:
    """A DMControl suite task or the Jaco arm, rendered at ``size × size`` from ``camera``.

    Args:
        task: ``domain-task`` (e.g. ``walker-walk``) or ``jaco-reach``.
        seed: seeds the task's initial-state randomness.
        size: rendered image side in pixels.
        camera: camera index or name, or a :data:`VIEWS` name (default: 0 for suite tasks,
            ``front_close`` for Jaco).
        action_repeat: physics control steps per action.
        antialias: MuJoCo's 4x multisampling. Off by default: on the CPU's software OpenGL it costs about
            a third of the render time and hardly matters at 64 px (see BENCHMARKS.md).
    """

    def __init__(self, task: str, seed: int, size: int = 64, camera: int | str | None = None,
                 action_repeat: int = 2, antialias: bool = False) -> None:
        check_task(task)
        if action_repeat < 1:
            raise SimError(f"action_repeat must be >= 1, got {action_repeat}")
        self.task, self.size, self.action_repeat = task, size, action_repeat
        self.is_robot = task in ROBOT_TASKS
        _default_gl()
        if self.is_robot:
            from dm_control import manipulation

            self._env = manipulation.load(ROBOT_TASKS[task], seed=seed)
            self.camera = JACO_CAMERA if camera is None else camera
        else:
            from dm_control import suite

            domain, _, name = task.partition("-")
            self._env = suite.load(domain, name, task_kwargs={"random": seed})
            self.camera = 0 if camera is None else camera
        self._view = None  # an orbit camera of VIEWS, made at the first render
        self._check_camera()
        if not antialias:  # read when the render context is made, i.e. at the first render
            self.physics.model.vis.quality.offsamples = 0
        spec = self._env.action_spec()
        self.action_low = np.asarray(spec.minimum, dtype=np.float32) * np.ones(spec.shape, np.float32)
        self.action_high = np.asarray(spec.maximum, dtype=np.float32) * np.ones(spec.shape, np.float32)
        self._timestep = None

    def _check_camera(self) -> None:
        model = self.physics.model
        names = [model.id2name(i, "camera") for i in range(model.ncam)]
        self.camera = parse_camera(self.camera)
        views = VIEWS.get(self.task, {})
        valid = isinstance(self.camera, int) and -1 <= self.camera < model.ncam or self.camera in names \
            or self.camera in views
        if not valid:
            raise SimError(
                f"task {self.task} has no camera {self.camera!r}; cameras: -1 (free), "
                + ", ".join([f"{i} ({n})" if n else str(i) for i, n in enumerate(names)] + list(views))
            )

    @property
    def physics(self):
        return self._env.physics

    @property
    def action_dim(self) -> int:
        return int(self.action_low.shape[0])

    @property
    def substeps(self) -> int:
        """Physics steps per control step (reacher: 1; Jaco's composer task: 20, its action held through them)."""
        return max(1, round(self._env.control_timestep() / self.physics.model.opt.timestep))

    @property
    def control_fps(self) -> float:
        """Frames per second of the stored steps (one per ``action_repeat`` control steps)."""
        return 1.0 / (self._env.control_timestep() * self.action_repeat)

    @property
    def max_steps(self) -> int:
        """The task's own episode length in stored steps."""
        limit = getattr(self._env, "_step_limit", None)
        if limit is None or not np.isfinite(limit):
            limit = self._env._time_limit / self._env.control_timestep()  # composer environments
        return int(limit) // self.action_repeat

    def reset(self) -> StepRecord:
        self._timestep = self._env.reset()
        return self.observe()

    def reset_state(self) -> np.ndarray:
        """Start an episode without rendering; returns the proprioceptive state ``[S]`` (state-based agents)."""
        self._timestep = self._env.reset()
        return self.proprio()

    def step(self, action: np.ndarray, trace: list | None = None) -> tuple[float, bool]:
        """Apply ``action`` for ``action_repeat`` control steps; returns (summed reward, episode over).

        ``trace``: when given, the joint positions ``qpos [Q]`` after every control step are appended to it
        (a success criterion that holds "at any step" looks at each of them, not only at the stored ones).
        """
        action = np.clip(np.asarray(action, dtype=np.float64), self.action_low, self.action_high)
        reward = 0.0
        for _ in range(self.action_repeat):
            self._timestep = self._env.step(action)
            reward += float(self._timestep.reward or 0.0)
            if trace is not None:
                trace.append(self.qpos())
            if self._timestep.last():
                return reward, True
        return reward, False

    def qpos(self) -> np.ndarray:
        """The joint positions ``[Q]`` (radians for hinges; LeWorldModel's reacher success compares them)."""
        return self.physics.data.qpos.astype(np.float64).copy()

    def render(self) -> np.ndarray:
        """``[3, size, size]`` uint8 image from the camera."""
        pose = VIEWS.get(self.task, {}).get(self.camera) if isinstance(self.camera, str) else None
        if pose is None:
            image = self.physics.render(self.size, self.size, camera_id=self.camera)
        else:
            if self._view is None or self._view[0] is not self.physics:  # a reset may recompile the physics
                from dm_control.mujoco.engine import MovableCamera

                camera = MovableCamera(self.physics, self.size, self.size)
                camera.set_pose(*pose)
                self._view = (self.physics, camera)
            image = self._view[1].render()
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def proprio(self) -> np.ndarray:
        observation = self._timestep.observation
        parts = [np.asarray(v, dtype=np.float32).ravel() for k, v in observation.items() if "image" not in k]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def pinch(self) -> np.ndarray | None:
        if not self.is_robot:
            return None
        return self.physics.bind(self._env.task._hand.pinch_site).xpos.astype(np.float32).copy()

    def target(self) -> np.ndarray | None:
        if not self.is_robot:
            return None
        return self.physics.bind(self._env.task._target).pos.astype(np.float32).copy()

    def effector(self) -> np.ndarray:
        """Where the body is, for goal-reaching metrics: Jaco's pinch site and reacher's fingertip as ``[3]``
        metres; for any other task the joint positions ``qpos`` (a pose, in the joints' own units)."""
        if self.is_robot:
            return self.pinch()
        if self.task.startswith("reacher-"):
            return self.physics.named.data.geom_xpos["finger"].astype(np.float32).copy()
        return self.physics.data.qpos.astype(np.float32).copy()

    def observe(self) -> StepRecord:
        return StepRecord(self.render(), self.proprio(), self.physics.get_state().copy(), self.pinch(), self.target())

    def restore(self, physics_state: np.ndarray, target: np.ndarray | None = None) -> None:
        """Put the simulator back into a stored state (and, for Jaco, the stored target position)."""
        if self._timestep is None:
            self._timestep = self._env.reset()
        with self.physics.reset_context():
            self.physics.set_state(np.asarray(physics_state, dtype=np.float64))
            if self.is_robot and target is not None:
                self.physics.bind(self._env.task._target).pos = target
        if self.is_robot:
            self.physics.forward()

    def close(self) -> None:
        self._view = None
        close = getattr(self._env, "close", None)
        if close is not None:
            close()
