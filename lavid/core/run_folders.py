"""Where a training run keeps its checkpoints: ``<out_dir>/checkpoints/step_XXXXXXXX`` and a ``latest`` pointer.

Pure paths (no torch), so that every stage can find a run's newest checkpoint: the trainer writes and resumes
them (:mod:`lavid.training.checkpoint`), and a model reads another run's encoder from one
(:mod:`lavid.models.encoder`).
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_FILE = "trainer_state.json"
LATEST = "latest"
WEIGHTS = "model.safetensors"
"""The model's weights in a checkpoint folder (accelerate's name for them)."""


def checkpoint_root(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of a run, or ``None``."""
    root = checkpoint_root(out_dir)
    pointer = root / LATEST
    if pointer.exists():
        path = root / pointer.read_text().strip()
        if (path / STATE_FILE).exists():
            return path
    complete = sorted(p for p in root.glob("step_*") if p.is_dir() and (p / STATE_FILE).exists()
                      and not p.name.endswith(".tmp"))
    return complete[-1] if complete else None


def weights_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint folder whose weights a path names: ``folder`` itself when it holds :data:`WEIGHTS` (a
    ``checkpoints/step_*`` folder), else the run's newest complete checkpoint with weights; ``None`` if neither."""
    folder = Path(folder)
    if (folder / WEIGHTS).exists():
        return folder
    checkpoint = latest_checkpoint(folder)
    return checkpoint if checkpoint is not None and (checkpoint / WEIGHTS).exists() else None
