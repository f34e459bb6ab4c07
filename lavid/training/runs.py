"""Open a finished (or checkpointed) training run for evaluation: its config and its model weights.

A run folder is what ``lavid/train.py`` writes: ``config.yaml`` and ``checkpoints/step_*/model.safetensors``.
Every way a folder can fail to be a usable run ends in :class:`RunError` with a message that says what
to do, never a bare traceback.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lavid.core.config import ConfigError, from_dict, load_yaml
from lavid.core.run_folders import STATE_FILE, WEIGHTS, weights_checkpoint
from lavid.models.world_model import LatentActionWorldModel
from lavid.training.train_config import TrainConfig, build_model



class RunError(Exception):
    """A run folder or checkpoint that cannot be evaluated (missing, unfinished, or of another model)."""


@dataclass
class LoadedRun:
    """Attributes:
        model: the world model in eval mode, on ``device``.
        config: the run's resolved training config.
        run_dir: the run folder; checkpoint: the checkpoint folder the weights came from; step: its step.
    """

    model: LatentActionWorldModel
    config: TrainConfig
    run_dir: Path
    checkpoint: Path
    step: int


def find_run(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(run folder, checkpoint folder)`` for a run folder or one of its ``checkpoints/step_*`` folders."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path} does not exist")
    if (path / WEIGHTS).exists() and path.parent.name == "checkpoints":
        return path.parent.parent, path
    if not (path / "config.yaml").exists():
        raise RunError(f"{path} is not a training run (no config.yaml); pass the out_dir of lavid/train.py")
    checkpoint = weights_checkpoint(path)
    if checkpoint is None:
        raise RunError(f"run {path} has no complete checkpoint yet; train it (or resume=true) until one is saved")
    return path, checkpoint


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRun:
    """Build the run's model from its ``config.yaml`` and load the checkpoint's weights.

    Raises:
        RunError: no config or checkpoint, an unreadable config, or weights that do not fit the model
            the config describes (another latent family or size).
    """
    import json

    from safetensors.torch import load_file

    run_dir, checkpoint = find_run(path)
    try:
        config = from_dict(TrainConfig, load_yaml(run_dir / "config.yaml"))
    except (ConfigError, OSError) as error:
        raise RunError(f"{run_dir / 'config.yaml'} cannot be read: {error}") from error
    # every weight, a frozen encoder's included, is in the run's own checkpoint: build without reading the
    # encoder's source file, which may have moved since the run trained
    encoder = dataclasses.replace(config.model.encoder, checkpoint=None)
    built = dataclasses.replace(config, model=dataclasses.replace(config.model, encoder=encoder))
    try:  # config.yaml holds the resolved model.action_dim of an action-conditioned run
        model = build_model(built)
    except ValueError as error:
        raise RunError(f"{run_dir / 'config.yaml'} does not describe a model that can be built: {error}") from error
    try:
        state = load_file(str(checkpoint / WEIGHTS))
    except Exception as error:  # safetensors raises its own types for truncated files
        raise RunError(f"{checkpoint / WEIGHTS} cannot be read ({error}); is the checkpoint complete?") from error
    check_weights_fit(model, state, checkpoint, config)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    step = int(json.loads((checkpoint / STATE_FILE).read_text()).get("step", 0)) if (checkpoint / STATE_FILE).exists() else 0
    return LoadedRun(model, config, run_dir, checkpoint, step)


def check_weights_fit(model: torch.nn.Module, state: dict[str, torch.Tensor], checkpoint: Path, config: TrainConfig) -> None:
    """Raise :class:`RunError` naming what differs when ``state`` was saved from another model."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unknown tensors (e.g. {unexpected[0]})")
    if shapes:
        problems.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
    model_config = config.model
    described = (f"conditioned on actions of {model_config.action_dim} per frame" if model_config.condition == "action"
                 else f"latent family {model_config.latent.family!r}, dim {model_config.latent.dim}")
    raise RunError(
        f"checkpoint {checkpoint} does not fit the model of its run's config ({described}): {'; '.join(problems)}. "
        "Was it copied from a run of another family or size?"
    )
