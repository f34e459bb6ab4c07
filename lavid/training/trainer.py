"""The training loop: one code path for CPU, one GPU, many GPUs and nodes (through accelerate).

Each optimizer step consumes ``grad_accum`` micro-batches of ``batch_size`` clips per process. The data
position (epoch, items consumed) is part of every checkpoint, so ``resume=true`` continues the exact
curve. Only the main process writes logs, pictures and the progress bar.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from lavid.core.threads import usable_cores
from lavid.core.config import check, flatten, to_dict
from lavid.data.clips import make_loader
from lavid.data.training_data import MODEL_INPUTS, build_training_data, ensure_default_data
from lavid.models.world_model import LatentActionWorldModel
from lavid.training.checkpoint import CheckpointMissing, latest_checkpoint, load_checkpoint, save_checkpoint
from lavid.training.evaluation import evaluate, rollout_picture
from lavid.training.train_config import TrainConfig, build_model, resolve_action_dim

log = logging.getLogger(__name__)

AfterTraining = Callable[[LatentActionWorldModel, TrainConfig, Path], dict[str, float]]
"""``(trained model, config, out_dir) -> {name: value}``: what runs on the main process after training."""


class RunExists(Exception):
    """``out_dir`` already holds a run and ``resume`` was not asked for."""


def lr_lambda(total_steps: int, warmup_fraction: float, min_ratio: float):
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to ``min_ratio``."""
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, embeddings and other 1-D or position parameters."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or "pos_embed" in name or "which_step" in name or "query" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _prepare_out_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    out = Path(config.out_dir)
    checkpoint = latest_checkpoint(out)
    if config.resume:
        if checkpoint is None:
            raise CheckpointMissing(f"resume=true but {out} has no complete checkpoint to resume from")
    elif checkpoint is not None or (out / "metrics.jsonl").exists():
        raise RunExists(f"{out} already holds a run; pass resume=true to continue it or choose another out_dir")
    return out, checkpoint if config.resume else None


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per logged step, the record that is always there) on the main
    process, and the same values to the experiment trackers of ``config.trackers`` through accelerate
    (TensorBoard by default, under ``out_dir/tensorboard``)."""

    def __init__(self, accelerator, out: Path, resume_step: int | None) -> None:
        self.accelerator = accelerator
        self.enabled = accelerator.is_main_process
        self.path = out / "metrics.jsonl"
        if not self.enabled:
            return
        if resume_step is not None and self.path.exists():  # drop what a killed run logged after its checkpoint
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        self.accelerator.log(values, step=step)

    def close(self) -> None:
        # not accelerator.end_training(): it also destroys the process group, which the run still uses
        for tracker in self.accelerator.trackers:
            tracker.finish()


def _start_trackers(accelerator, config: TrainConfig, out: Path) -> None:
    """Open the run's experiment trackers (main process only: accelerate's ``init_trackers``). The
    resolved config goes to each tracker but TensorBoard, which keeps it as ``out_dir/config.yaml``."""
    if not config.trackers:
        return
    accelerator.init_trackers("lavid", init_kwargs={"wandb": {"name": out.name}, "mlflow": {"run_name": out.name}})
    flat = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in flatten(to_dict(config)).items()}
    for tracker in accelerator.trackers:
        if tracker.name != "tensorboard":
            tracker.store_init_configuration(flat)


def _scalars(out: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@dataclass
class _Session:
    """What a training run works on once it is set up; ``step``, ``epoch`` and ``consumed`` (clips of the
    epoch this process has read) are the data position saved in every checkpoint."""

    accelerator: Any
    config: TrainConfig
    out: Path
    data: Any  # lavid.data.training_data.TrainingData
    model: torch.nn.Module  # as prepared by accelerate (possibly wrapped)
    core: LatentActionWorldModel  # the unwrapped model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # the latent-noise RNG of this process
    step: int = 0
    epoch: int = 0
    consumed: int = 0


def train(config: TrainConfig, after_training: AfterTraining | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns a summary with the final metrics and where results are.

    Args:
        after_training: ``(trained model, config, out_dir) -> {name: value}``, called on the main process
            when ``config.probe_episodes > 0`` once training is done; its values are logged at the last step.
            ``lavid/train.py`` passes the probes of :mod:`lavid.metrics.training_probes` (training itself
            does not import the metrics stage).
    """
    check(config.model.predictor.attention != "flex" or torch.cuda.is_available(), "model.predictor.attention",
          "flex trains on CUDA only (PyTorch's flex_attention has no backward pass on the CPU); use mask here "
          "(a run trained with flex evaluates and plans on the CPU as it is)")
    out, checkpoint = _prepare_out_dir(config)
    accelerator = _make_accelerator(config, out)
    config = _resolve_run_config(accelerator, config, out)
    session = _set_up(accelerator, config, out)
    if checkpoint is not None:
        _resume(session, checkpoint)
    metrics = MetricsLog(accelerator, out, session.step if checkpoint is not None else None)
    _start_trackers(accelerator, config, out)
    last = _run_steps(session, metrics)
    if accelerator.is_main_process and config.probe_episodes and after_training is not None:
        probes = after_training(session.core, config, out)
        if probes:
            metrics.write(session.step, probes)
        last.update(probes)
    metrics.close()
    accelerator.wait_for_everyone()
    return {"out_dir": str(out), "step": session.step, "metrics": last, "checkpoint": str(latest_checkpoint(out)),
            "processes": accelerator.num_processes, "condition": config.model.condition}


def _make_accelerator(config: TrainConfig, out: Path):
    """The run's ``Accelerator`` (precision, gradient accumulation, trackers), with the CPU threads shared
    among the processes."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    # cpu=True on a machine without CUDA: processes started by torchrun (accelerate launch --multi_gpu)
    # then join a gloo group; accelerate only forms a multi-CPU group when told it is on the CPU.
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.mixed_precision),
                              gradient_accumulation_steps=config.optim.grad_accum, cpu=not torch.cuda.is_available(),
                              # the schedule counts optimizer steps: step it once per step, not once per process
                              step_scheduler_with_optimizer=False,
                              log_with=list(config.trackers) or None,
                              project_config=ProjectConfiguration(project_dir=str(out),
                                                                  logging_dir=str(out / "tensorboard")))
    if accelerator.device.type == "cpu":  # accelerate launch pins CPU processes to 1 thread: use a share of the cores
        torch.set_num_threads(max(1, usable_cores() // accelerator.num_processes))
    return accelerator


def _resolve_run_config(accelerator, config: TrainConfig, out: Path) -> TrainConfig:
    """Make the default data when it is missing, resolve what comes from the data and write ``config.yaml``."""
    main = accelerator.is_main_process
    if main:
        ensure_default_data(config.data)
    accelerator.wait_for_everyone()
    config = resolve_action_dim(config)  # model.action_dim=0 (auto) -> the data's; config.yaml gets the value
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return config


def _set_up(accelerator, config: TrainConfig, out: Path) -> _Session:
    """Seed, then build the data, the model, its optimizer and schedule (in that order, the same on every
    process) and hand them to accelerate."""
    from accelerate.utils import set_seed

    set_seed(config.seed)  # identical initialization on every process
    actions = config.model.action_dim if config.model.condition == "action" else None
    data = build_training_data(config.data, config.model.encoder.tubelet, pad_actions=actions)
    model = _sync_batch_norm(accelerator, build_model(config))
    optimizer = torch.optim.AdamW(parameter_groups(model, config.optim.weight_decay), lr=config.optim.lr,
                                  betas=tuple(config.optim.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.steps, config.optim.warmup_fraction, config.optim.min_lr_ratio))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    core: LatentActionWorldModel = accelerator.unwrap_model(model)
    if data.kind == "features":
        _check_feature_cache(config, data, core)
    generator = torch.Generator(device=accelerator.device).manual_seed(config.seed + 7919 * accelerator.process_index)
    return _Session(accelerator, config, out, data, model, core, optimizer, scheduler, generator)


def _sync_batch_norm(accelerator, model: LatentActionWorldModel) -> torch.nn.Module:
    """``model`` with SyncBatchNorm when several CUDA processes train a model with BatchNorm (a warning on the CPU)."""
    if accelerator.num_processes > 1 and any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()):
        if accelerator.device.type == "cuda":  # batch statistics over the global batch, as one process has them
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if accelerator.is_main_process:
            log.warning("BatchNorm statistics are per process on %s (SyncBatchNorm needs CUDA): a run on %d "
                        "processes is not the same as one process with the same global batch",
                        accelerator.device.type, accelerator.num_processes)
    return model


def _check_feature_cache(config: TrainConfig, data, core: LatentActionWorldModel) -> None:
    """Refuse a feature cache made by other encoder weights than the model's."""
    from lavid.data.clips import DatasetFormatError
    from lavid.models.encoder import encoder_fingerprint

    made_by = data.train.dataset.meta.get("encoder")
    if made_by != encoder_fingerprint(core.encoder):
        raise DatasetFormatError(
            f"feature cache {config.data.features} was made by other encoder weights ({made_by}); rebuild it "
            "with data_prep/encode.py using this config (same seed, sizes and checkpoint)"
        )


def _resume(session: _Session, checkpoint: Path) -> None:
    """Restore weights, optimizer, schedule, RNGs and the data position from ``checkpoint``."""
    state = load_checkpoint(session.accelerator, checkpoint, session.generator)
    session.step, session.epoch, session.consumed = state["step"], state["epoch"], state["consumed"]
    if session.accelerator.is_main_process:
        log.info("resumed from %s at step %d", checkpoint, session.step)


def _held_out_batches(session: _Session) -> list[dict[str, Any]]:
    """The first ``eval_batches`` held-out batches of this process, on its device (the same at every eval)."""
    config, accelerator = session.config, session.accelerator
    heldout = make_loader(session.data.heldout, config.optim.batch_size, seed=config.seed, shuffle=True, num_workers=0,
                          num_replicas=accelerator.num_processes, rank=accelerator.process_index, drop_last=False)
    batches = []
    for batch in heldout:
        batches.append(_to_device(batch, accelerator.device))
        if len(batches) >= config.eval_batches:
            break
    return batches


def _run_steps(session: _Session, metrics: MetricsLog) -> dict[str, float]:
    """Train from ``session.step`` to ``config.steps``, logging, evaluating and checkpointing on the way;
    returns the last logged value of every metric."""
    from tqdm.auto import tqdm

    config, accelerator, data = session.config, session.accelerator, session.data
    batch_size, world = config.optim.batch_size, accelerator.num_processes
    loader_args = dict(batch_size=batch_size, seed=config.seed, num_workers=config.data.num_workers,
                       num_replicas=world, rank=accelerator.process_index, weights=data.weights)
    if len(data.train) < batch_size * world:
        raise ValueError(f"{len(data.train)} training clips are fewer than one global batch "
                         f"({batch_size} x {world} processes); lower optim.batch_size")
    eval_batches = _held_out_batches(session)

    bar = tqdm(total=config.steps, initial=session.step, disable=not (accelerator.is_main_process and config.progress),
               unit="step", desc="training")
    started, clips_seen = time.perf_counter(), 0
    last: dict[str, float] = {}
    while session.step < config.steps:
        loader = make_loader(data.train, epoch=session.epoch, start=session.consumed, **loader_args)
        for batch in loader:
            result = _micro_batch(session, batch)
            session.consumed += batch_size
            clips_seen += batch_size * world
            if not accelerator.sync_gradients:
                continue
            session.core.update_ema()
            session.step += 1
            step = session.step
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                values = _training_metrics(session, result, clips_seen / (time.perf_counter() - started))
                last.update(values)
                metrics.write(step, values)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                values = _held_out_diagnostics(session, eval_batches)
                last.update(values)
                metrics.write(step, values)
                _write_rollout_picture(session, eval_batches)
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.steps:
                _save(session)
            if step >= config.steps:
                break
        else:
            session.epoch, session.consumed = session.epoch + 1, 0
    bar.close()
    return last


def _micro_batch(session: _Session, batch: dict[str, Any]) -> dict[str, Any]:
    """Forward and backward one micro-batch; the optimizer and the schedule step when the gradients of
    ``grad_accum`` micro-batches are complete. Returns the model's outputs."""
    config, accelerator, model = session.config, session.accelerator, session.model
    batch = _to_device(batch, accelerator.device)
    with accelerator.accumulate(model):
        inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
        session.core.set_progress(session.step / config.steps)
        result = model(**inputs, generator=session.generator)
        accelerator.backward(result["loss"])
        if accelerator.sync_gradients and config.optim.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        session.optimizer.step()
        if accelerator.sync_gradients:
            session.scheduler.step()
        session.optimizer.zero_grad(set_to_none=True)
    return result


def _training_metrics(session: _Session, result: dict[str, Any], clips_per_s: float) -> dict[str, float]:
    """The step's scalar outputs averaged over the processes, the learning rate and the throughput."""
    reduced = {k: session.accelerator.reduce(v, reduction="mean").item() for k, v in _scalars(result).items()}
    reduced["lr"] = session.scheduler.get_last_lr()[0]
    reduced["clips_per_s"] = clips_per_s
    return reduced


def _held_out_diagnostics(session: _Session, eval_batches: list[dict[str, Any]]) -> dict[str, float]:
    """The ``eval/*`` errors of :func:`~lavid.training.evaluation.evaluate` on the held-out batches, summed
    over the processes."""
    accelerator = session.accelerator
    return evaluate(session.core, eval_batches, session.config.rollout_horizon,
                    all_reduce=lambda totals: accelerator.reduce(totals, reduction="sum"))


def _write_rollout_picture(session: _Session, eval_batches: list[dict[str, Any]]) -> None:
    """``rollouts/step_*.png`` of the first held-out batch (main process; frames only, a feature cache has
    no pixels)."""
    if session.accelerator.is_main_process and session.data.kind == "frames":
        batch = eval_batches[0]
        rollout_picture(session.core, batch["frames"], session.config.rollout_horizon,
                        session.out / "rollouts" / f"step_{session.step:08d}.png", actions=batch.get("actions"))


def _save(session: _Session) -> None:
    """Checkpoint the run at its current step (every process takes part)."""
    save_checkpoint(session.accelerator, session.out, session.step,
                    {"epoch": session.epoch, "consumed": session.consumed, "config": to_dict(session.config)},
                    session.generator, session.config.keep_checkpoints)
