"""Goals for planning: restore a stored simulator step, render its image, read the arm's position."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lavid.data.clips import open_meta, read_rows
from lavid.data.sim import SimEnv


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
    meta = open_meta(root)
    if meta.get("kind") != "trajectory":
        raise ValueError(f"{root} holds {meta.get('kind')} clips, not simulator trajectories")
    episodes = datasets.load_from_disk(str(root / "episodes"))
    if not 0 <= episode < len(episodes):
        raise IndexError(f"episode {episode} out of range [0, {len(episodes)})")
    row = episodes[episode]
    if not 0 <= step < row["num_steps"]:
        raise IndexError(f"step {step} out of range [0, {row['num_steps']}) for episode {episode}")
    steps = datasets.load_from_disk(str(root / "steps"))
    columns = [c for c in ("frame", "physics", "pinch", "target") if c in steps.column_names]
    stored = {k: v[0] for k, v in read_rows(steps, int(row["first_row"]) + step, 1, columns).items()}
    pinch = stored.get("pinch")
    has_arm = pinch is not None and not np.isnan(pinch).any()
    camera = row["camera"]
    return StoredStep(
        frame=stored["frame"],
        physics=stored["physics"].astype(np.float64),
        pinch=pinch if has_arm else None,
        target=stored["target"] if has_arm else None,
        task=row["task"],
        camera=int(camera) if camera.lstrip("-").isdigit() else camera,
    )


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
