"""The training run's typed config (``configs/*.yaml`` + ``key=value`` overrides)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from lavid.core.config import ConfigError, check
from lavid.data.data_config import DataConfig
from lavid.data.training_data import data_action_dim
from lavid.models.world_model import LatentActionWorldModel, ModelConfig

@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (the paper's settings at paper scale).

    Attributes:
        batch_size: clips per process per micro-batch; the global batch is
            ``batch_size × processes × grad_accum``.
    """

    lr: float = 6.25e-4
    min_lr_ratio: float = 0.0
    warmup_fraction: float = 0.1
    weight_decay: float = 0.04
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.lr > 0, f"{key}lr", f"must be > 0, got {self.lr}")
        check(0 <= self.warmup_fraction < 1, f"{key}warmup_fraction", "must be in [0, 1)")
        check(0 <= self.min_lr_ratio <= 1, f"{key}min_lr_ratio", "must be in [0, 1]")
        check(self.weight_decay >= 0, f"{key}weight_decay", "must be >= 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{key}betas", "needs two values in [0, 1)")
        check(self.grad_clip >= 0, f"{key}grad_clip", "must be >= 0 (0 disables clipping)")
        check(self.batch_size >= 1, f"{key}batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, f"{key}grad_accum", f"must be >= 1, got {self.grad_accum}")


@dataclass
class TrainConfig:
    """A training run. ``steps`` and ``out_dir`` exist in every config.

    Attributes:
        steps: optimizer steps.
        out_dir: where the resolved config, checkpoints, TensorBoard logs and ``metrics.jsonl`` go.
        resume: continue from the latest checkpoint in ``out_dir`` (model, optimizer, scheduler, RNG and
            data position).
        mixed_precision: ``auto`` (bf16 on CUDA, none on CPU), ``no``, ``bf16`` or ``fp16``.
        log_every, eval_every, checkpoint_every: in optimizer steps (0 disables eval / periodic saves).
        eval_batches: held-out batches per evaluation.
        rollout_horizon: steps predicted autoregressively in the rollout evaluation.
        keep_checkpoints: how many recent checkpoints to keep.
        probe_episodes: after training, the state probe (:mod:`lavid.metrics.state_probe`) of the trained encoder on
            up to this many training and as many held-out episodes per task of the sources that store
            simulator states; logged as ``probe/...`` and written to ``state_probe.md`` (0: skip). With it,
            where clips have actions, the action probe of the latent (``probe/action_z/...``,
            ``probe/action_z_mlp/...``, ``probe/action_change/...``, with z's ceilings from the true poses
            ``probe/action_ceiling/...``, ``probe/action_ceiling_mlp/...``; ``action_probe.md``;
            :func:`lavid.metrics.latent_evals.action_probe`).
            ``lavid/train.py`` runs both through the trainer's ``after_training`` hook
            (:mod:`lavid.metrics.training_probes`).
        progress: show a progress bar.
        trackers: experiment trackers that receive every logged value through accelerate
            (:data:`TRACKERS`: ``tensorboard``, ``wandb``, ``mlflow``, ...; each only if its package is
            installed); ``[]`` for none. ``metrics.jsonl`` is written either way.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 250
    out_dir: str = "runs/tiny"
    seed: int = 0
    resume: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    rollout_horizon: int = 3
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    probe_episodes: int = 24
    progress: bool = True
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])

    def validate(self, prefix: str = "") -> None:
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.probe_episodes >= 0, "probe_episodes", f"must be >= 0, got {self.probe_episodes}")
        check_trackers(self.trackers)
        check(bool(self.out_dir), "out_dir", "must not be empty")
        check(self.log_every >= 1, "log_every", "must be >= 1")
        check(self.eval_every >= 0, "eval_every", "must be >= 0")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        check(self.eval_batches >= 1, "eval_batches", "must be >= 1")
        steps = self.data.frames // self.model.encoder.tubelet
        check(self.data.frames % self.model.encoder.tubelet == 0, "data.frames",
              f"{self.data.frames} frames are not whole tubelets of {self.model.encoder.tubelet}")
        check(steps <= self.model.predictor.max_steps + 1, "data.frames",
              f"{steps} steps exceed model.predictor.max_steps={self.model.predictor.max_steps}")
        check(1 <= self.rollout_horizon <= steps - 1, "rollout_horizon",
              f"must be in [1, {steps - 1}] for clips of {steps} steps")
        if self.data.features is not None:
            check(self.model.encoder.mode == "frozen", "data.features",
                  "a feature cache needs model.encoder.mode=frozen (a finetuned encoder changes its features)")


TRACKERS = ("tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive", "trackio", "swanlab")
"""Experiment trackers accelerate can log to (``trackers``); each needs its own package installed."""


def check_trackers(trackers: list[str]) -> None:
    """Every name in ``trackers`` is one of :data:`TRACKERS` and its package is installed (else ConfigError)."""
    for name in trackers:
        check(name in TRACKERS, "trackers", f"unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
    if not trackers:
        return
    from accelerate import utils

    for name in trackers:
        check(getattr(utils, f"is_{name}_available")(), "trackers",
              f"{name} is not installed (pip install {name.replace('_', '-')}), or leave it out of the list")


def resolve_action_dim(config: TrainConfig) -> TrainConfig:
    """``config`` with ``model.action_dim`` resolved when ``model.condition=action`` (unchanged otherwise).

    ``model.action_dim=0`` (auto) becomes the largest action size per frame among the training sources
    (or the feature cache's: :func:`lavid.data.training_data.data_action_dim`); an explicit value must be at
    least that. Every source must have actions.

    Raises:
        DatasetFormatError: a source (or the feature cache) without actions.
        ConfigError: an explicit ``model.action_dim`` smaller than the data's actions.
    """
    model = config.model
    if model.condition != "action":
        return config
    found = data_action_dim(config.data)
    if model.action_dim == 0:
        return dataclasses.replace(config, model=dataclasses.replace(model, action_dim=found))
    if model.action_dim < found:
        raise ConfigError(f"model.action_dim: {model.action_dim} is fewer than the {found} action entries per frame "
                          "of the data (0 picks it from the data)")
    return config


def build_model(config: TrainConfig) -> LatentActionWorldModel:
    """The world model a run of ``config`` trains: ``config.model``, given what it needs from the rest of the
    run config (the data's frame stride ``data.frame_stride``, which sets an action-conditioned step's
    condition size).

    Every place that builds a run's model goes through here (training, :func:`lavid.training.load_run`, the
    benchmarks), so a model built from the same config and the same seed has the same weights everywhere.
    The weights are drawn from torch's global RNG: seed it first. With ``model.condition=action``,
    ``model.action_dim`` must be resolved first (:func:`resolve_action_dim`).

    Raises:
        ValueError: a model the config cannot build (``model.condition=action`` with ``action_dim`` 0).
    """
    return LatentActionWorldModel(config.model, frame_stride=config.data.frame_stride)
