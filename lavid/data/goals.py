"""Goals for planning: restore a stored simulator step, render its image, read the arm's position."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lavid.data.clips import open_meta, read_rows
from lavid.data.sim import SimEnv, parse_camera


@dataclass
class StoredStep:
    """One step of a stored episode.

    Attributes:
        frame: ``[3, H, W]`` uint8 image as stored.
        physics: ``[P]`` float64 simulator state.
        pinch, target: ``[3]`` metres (Jaco) or ``None``.
        task, camera: what to rebuild the simulator with.
    """

    frame: np.ndarray
    physics: np.ndarray
    pinch: np.ndarray | None
    target: np.ndarray | None
    task: str
    camera: int | str


def load_step(root: str | os.PathLike, episode: int, step: int) -> StoredStep:
    """Read step ``step`` of episode ``episode`` from a trajectory dataset made by ``data_prep/dmc.py``."""
    import datasets

    root = Path(root)
    row = _episode_row(root, episode)
    if not 0 <= step < row["num_steps"]:
        raise IndexError(f"step {step} out of range [0, {row['num_steps']}) for episode {episode}")
    steps = datasets.load_from_disk(str(root / "steps"))
    columns = [c for c in ("frame", "physics", "pinch", "target") if c in steps.column_names]
    stored = {k: v[0] for k, v in read_rows(steps, int(row["first_row"]) + step, 1, columns).items()}
    pinch, target = _arm(stored)
    return StoredStep(
        frame=stored["frame"],
        physics=stored["physics"].astype(np.float64),
        pinch=pinch,
        target=target,
        task=row["task"],
        camera=_camera(row),
    )


def _arm(stored: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The stored ``pinch`` and ``target`` columns, or ``None`` for a body without an arm (stored as NaN)."""
    pinch = stored.get("pinch")
    has_arm = pinch is not None and not np.isnan(pinch).any()
    return (pinch, stored["target"]) if has_arm else (None, None)


def _camera(row: dict) -> int | str:
    """An episode row's camera: an index or a name, as :class:`lavid.data.sim.SimEnv` takes it."""
    return parse_camera(row["camera"])


def render_state(task: str, physics: np.ndarray, target: np.ndarray | None = None, size: int = 64,
                 camera: int | str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Restore ``physics`` (and the Jaco target) in a fresh simulator; return its image and pinch position.

    Returns:
        ``([3, size, size] uint8 image, [3] pinch-site position in metres or None)``.
    """
    env = SimEnv(task, seed=0, size=size, camera=camera)
    try:
        env.restore(physics, target)
        return env.render(), env.pinch()
    finally:
        env.close()


def goal_image(root: str | os.PathLike, episode: int, step: int, size: int | None = None) -> np.ndarray:
    """Re-render a stored step as a goal image (``size`` defaults to the dataset's)."""
    stored = load_step(root, episode, step)
    size = size or stored.frame.shape[-1]
    image, _ = render_state(stored.task, stored.physics, stored.target, size=size, camera=stored.camera)
    return image


@dataclass
class StoredEpisode:
    """One whole stored episode of a trajectory dataset.

    Attributes:
        frames: ``[L, 3, H, W]`` uint8; actions: ``[L, A]`` float32 (step ``t``'s action follows frame ``t``);
        physics: ``[L, P]`` float64; pinch, target: ``[L, 3]`` metres (Jaco) or ``None``;
        task, camera, source: what it is (``source`` names the episode, as the train / held-out split does).
    """

    frames: np.ndarray
    actions: np.ndarray
    physics: np.ndarray
    pinch: np.ndarray | None
    target: np.ndarray | None
    task: str
    camera: int | str
    source: str


def episode_table(root: str | os.PathLike):
    """The ``episodes`` table of a trajectory dataset (``ValueError`` for any other kind of dataset)."""
    import datasets

    root = Path(root)
    meta = open_meta(root)
    if meta.get("kind") != "trajectory":
        raise ValueError(f"{root} holds {meta.get('kind')} clips, not simulator trajectories")
    return datasets.load_from_disk(str(root / "episodes"))


def _episode_row(root: str | os.PathLike, episode: int) -> dict:
    episodes = episode_table(root)
    if not 0 <= episode < len(episodes):
        raise IndexError(f"episode {episode} out of range [0, {len(episodes)})")
    return episodes[episode]


def read_episode(root: str | os.PathLike, episode: int, frames: bool = True) -> StoredEpisode:
    """Episode ``episode`` (its row in the ``episodes`` table) of a dataset made by ``data_prep/dmc.py``."""
    import datasets

    row = _episode_row(root, episode)
    steps = datasets.load_from_disk(str(Path(root) / "steps"))
    wanted = ["action", "physics"] + [c for c in ("pinch", "target") if c in steps.column_names]
    stored = read_rows(steps, int(row["first_row"]), int(row["num_steps"]), (["frame"] if frames else []) + wanted)
    pinch, target = _arm(stored)
    return StoredEpisode(
        frames=stored["frame"] if frames else np.zeros((0, 3, 0, 0), np.uint8),
        actions=stored["action"].astype(np.float32).reshape(int(row["num_steps"]), -1)[:, : int(row["action_dim"])],
        physics=stored["physics"].astype(np.float64),
        pinch=pinch,
        target=target,
        task=row["task"],
        camera=_camera(row),
        source=row["source"],
    )
