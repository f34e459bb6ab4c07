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
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from lavid.core.threads import usable_cores
from lavid.core.config import to_dict
from lavid.data.clips import make_loader
from lavid.data.training_data import MODEL_INPUTS, build_training_data, ensure_default_data
from lavid.models.world_model import LatentActionWorldModel
from lavid.training.checkpoint import CheckpointMissing, latest_checkpoint, load_checkpoint, save_checkpoint
from lavid.training.evaluation import evaluate, rollout_picture
from lavid.training.train_config import TrainConfig, resolve_action_dim

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
            for key, value in _flatten(to_dict(config)).items()}
    for tracker in accelerator.trackers:
        if tracker.name != "tensorboard":
            tracker.store_init_configuration(flat)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _scalars(out: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train(config: TrainConfig, after_training: AfterTraining | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns a summary with the final metrics and where results are.

    Args:
        after_training: ``(trained model, config, out_dir) -> {name: value}``, called on the main process
            when ``config.probe_episodes > 0`` once training is done; its values are logged at the last step.
            ``lavid/train.py`` passes the probes of :mod:`lavid.metrics.training_probes` (training itself
            does not import the metrics stage).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    out, checkpoint = _prepare_out_dir(config)
    # cpu=True on a machine without CUDA: processes started by torchrun (accelerate launch --multi_gpu)
    # then join a gloo group; accelerate only forms a multi-CPU group when told it is on the CPU.
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.mixed_precision),
                              gradient_accumulation_steps=config.optim.grad_accum, cpu=not torch.cuda.is_available(),
                              # the schedule counts optimizer steps: step it once per step, not once per process
                              step_scheduler_with_optimizer=False,
                              log_with=list(config.trackers) or None,
                              project_config=ProjectConfiguration(project_dir=str(out),
                                                                  logging_dir=str(out / "tensorboard")))
    main = accelerator.is_main_process
    if accelerator.device.type == "cpu":  # accelerate launch pins CPU processes to 1 thread: use a share of the cores
        torch.set_num_threads(max(1, usable_cores() // accelerator.num_processes))
    if main:
        ensure_default_data(config.data)
    accelerator.wait_for_everyone()
    config = resolve_action_dim(config)  # model.action_dim=0 (auto) -> the data's; config.yaml gets the value
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

    set_seed(config.seed)  # identical initialization on every process
    actions = config.model.action_dim if config.model.condition == "action" else None
    data = build_training_data(config.data, config.model.encoder.tubelet, pad_actions=actions)
    model = LatentActionWorldModel(config.model, frame_stride=config.data.frame_stride)
    if accelerator.num_processes > 1 and any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()):
        if accelerator.device.type == "cuda":  # batch statistics over the global batch, as one process has them
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif main:
            log.warning("BatchNorm statistics are per process on %s (SyncBatchNorm needs CUDA): a run on %d "
                        "processes is not the same as one process with the same global batch",
                        accelerator.device.type, accelerator.num_processes)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.optim.weight_decay), lr=config.optim.lr,
                                  betas=tuple(config.optim.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.steps, config.optim.warmup_fraction, config.optim.min_lr_ratio))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    core: LatentActionWorldModel = accelerator.unwrap_model(model)
    if data.kind == "features":
        from lavid.data.clips import DatasetFormatError
        from lavid.models.encoder import encoder_fingerprint

        made_by = data.train.dataset.meta.get("encoder")
        if made_by != encoder_fingerprint(core.encoder):
            raise DatasetFormatError(
                f"feature cache {config.data.features} was made by other encoder weights ({made_by}); rebuild it "
                "with data_prep/encode.py using this config (same seed, sizes and checkpoint)"
            )
    generator = torch.Generator(device=accelerator.device).manual_seed(config.seed + 7919 * accelerator.process_index)

    step, epoch, consumed = 0, 0, 0
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, generator)
        step, epoch, consumed = state["step"], state["epoch"], state["consumed"]
        if main:
            log.info("resumed from %s at step %d", checkpoint, step)
    metrics = MetricsLog(accelerator, out, step if checkpoint is not None else None)
    _start_trackers(accelerator, config, out)

    batch_size, world = config.optim.batch_size, accelerator.num_processes
    loader_args = dict(batch_size=batch_size, seed=config.seed, num_workers=config.data.num_workers,
                       num_replicas=world, rank=accelerator.process_index, weights=data.weights)
    if len(data.train) < batch_size * world:
        raise ValueError(f"{len(data.train)} training clips are fewer than one global batch "
                         f"({batch_size} x {world} processes); lower optim.batch_size")
    heldout = make_loader(data.heldout, batch_size, seed=config.seed, shuffle=True, num_workers=0,
                          num_replicas=world, rank=accelerator.process_index, drop_last=False)
    eval_batches = []
    for batch in heldout:
        eval_batches.append(_to_device(batch, accelerator.device))
        if len(eval_batches) >= config.eval_batches:
            break

    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=step, disable=not (main and config.progress), unit="step", desc="training")
    started, clips_seen = time.perf_counter(), 0
    last: dict[str, float] = {}
    while step < config.steps:
        loader = make_loader(data.train, epoch=epoch, start=consumed, **loader_args)
        for batch in loader:
            batch = _to_device(batch, accelerator.device)
            with accelerator.accumulate(model):
                inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
                core.set_progress(step / config.steps)
                result = model(**inputs, generator=generator)
                accelerator.backward(result["loss"])
                if accelerator.sync_gradients and config.optim.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            consumed += batch_size
            clips_seen += batch_size * world
            if not accelerator.sync_gradients:
                continue
            core.update_ema()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                reduced = {k: accelerator.reduce(v, reduction="mean").item() for k, v in _scalars(result).items()}
                reduced["lr"] = scheduler.get_last_lr()[0]
                reduced["clips_per_s"] = clips_seen / (time.perf_counter() - started)
                last.update(reduced)
                metrics.write(step, reduced)
                bar.set_postfix(loss=f"{reduced['loss']:.4f}")
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                values = evaluate(core, eval_batches, config.rollout_horizon,
                                  all_reduce=lambda totals: accelerator.reduce(totals, reduction="sum"))
                last.update(values)
                metrics.write(step, values)
                if main and data.kind == "frames":
                    rollout_picture(core, eval_batches[0]["frames"], config.rollout_horizon,
                                    out / "rollouts" / f"step_{step:08d}.png", actions=eval_batches[0].get("actions"))
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.steps:
                save_checkpoint(accelerator, out, step, {"epoch": epoch, "consumed": consumed,
                                                         "config": to_dict(config)}, generator,
                                config.keep_checkpoints)
            if step >= config.steps:
                break
        else:
            epoch, consumed = epoch + 1, 0
    bar.close()
    if main and config.probe_episodes and after_training is not None:
        probes = after_training(core, config, out)
        if probes:
            metrics.write(step, probes)
        last.update(probes)
    metrics.close()
    accelerator.wait_for_everyone()
    return {"out_dir": str(out), "step": step, "metrics": last,
            "checkpoint": str(latest_checkpoint(out)), "processes": world, "condition": config.model.condition}
