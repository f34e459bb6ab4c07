"""Atomic checkpoints of a training run: accelerate's state (safetensors weights, optimizer, scheduler,
per-process RNG) plus the trainer's own position (step, data epoch and offset, latent-noise RNG).

A checkpoint is written into ``step_XXXXXXXX.tmp`` and renamed when complete; ``latest`` names the newest
complete one and is replaced atomically, so a kill at any moment leaves a loadable latest checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lavid.core.run_folders import LATEST, STATE_FILE, checkpoint_root, latest_checkpoint

__all__ = ["LATEST", "STATE_FILE", "CheckpointMissing", "checkpoint_root", "latest_checkpoint", "load_checkpoint",
           "save_checkpoint"]


class CheckpointMissing(Exception):
    """``resume=true`` but the run folder has no complete checkpoint."""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_checkpoint(accelerator, out_dir: str | os.PathLike, step: int, state: dict[str, Any],
                    generator: torch.Generator, keep: int) -> Path:
    """Save everything needed to continue exactly; every process must call it."""
    root = checkpoint_root(out_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    torch.save(generator.get_state(), tmp / f"latent_rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_atomic(tmp / STATE_FILE, json.dumps({**state, "step": step}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _write_atomic(root / LATEST, final.name)
        old = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        for path in old[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, generator: torch.Generator) -> dict[str, Any]:
    """Restore accelerate's state and the latent RNG; returns the trainer state (step, epoch, ...)."""
    accelerator.load_state(str(path))
    rng = path / f"latent_rng_{accelerator.process_index}.pt"
    if rng.exists():
        generator.set_state(torch.load(rng, weights_only=True))
    return json.loads((path / STATE_FILE).read_text())
