"""The regularizer ablation: every latent family over a capacity sweep, same data, budget and seed.

Every run trains its own encoder as the default config does (end to end), or, with
``model.encoder.mode=frozen``, all runs share one frozen encoder. Stages, each resumable (a finished
stage is never redone; an interrupted run resumes from its checkpoint):

1. frozen encoder only: the config's checkpoint, or a short MAE pretraining on the training split (ViT),
   and the feature cache of that encoder (training then skips the encoder);
2. one training run per (family, coefficient) with ``lavid/train.py`` in its own process, one at a time or
   ``jobs`` at once, each optionally under a launcher (``accelerate launch ...``); a failed run is recorded
   with its error and the sweep goes on;
3. the pixel decoder: one per run on its own encoder (``runs/NAME/decoder.pt``), or one shared by all runs
   of a frozen encoder (``decoder.pt``: every run then predicts in the same space);
4. the latent evals of every finished run (``eval.json`` in its folder);
5. ``results.{md,csv,json}`` and plots.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]

COEFFICIENT = {"noisy": "beta", "sparse": "l1", "discrete": "codebook_size", "fsq": "fsq_levels"}
"""The swept coefficient of each family (``none`` and ``deterministic`` have none)."""

PAPER_VALUES: dict[str, list] = {
    "noisy": [5e-3, 1e-3, 5e-4, 1e-4, 5e-5, 1e-5, 5e-6, 1e-6],
    "sparse": [0.4, 0.1, 0.08, 0.06, 0.05, 0.04, 0.02, 0.01],
    "discrete": [16, 1024, 4096, 32768],
    "fsq": [[8, 5], [8, 5, 5, 5], [8, 8, 8, 5, 5], [8, 8, 8, 6, 5, 5]],
}
FAMILIES = ("noisy", "sparse", "discrete", "fsq", "none", "deterministic")


@dataclass
class Budget:
    """How much each stage gets.

    Attributes:
        steps: optimizer steps per run. mae_steps: encoder pretraining when the config has no checkpoint.
        decoder_steps: pixel decoder training. eval_clips / probe_clips: held-out clips evaluated and
        training clips the probe is fit on. values: the coefficients swept per family.
        overrides: extra ``key=value`` for every run.
    """

    steps: int
    mae_steps: int
    decoder_steps: int
    eval_clips: int
    probe_clips: int
    values: dict[str, list]
    overrides: list[str] = field(default_factory=list)


BUDGETS = {
    # 2 CPU cores, <= 30 minutes for all 10 runs (each trains its own encoder and decoder): ends of each
    # sweep, 400 steps a run (the default run's 1,000 would take 40 minutes of training alone)
    "smoke": Budget(steps=400, mae_steps=200, decoder_steps=100, eval_clips=64, probe_clips=128,
                    values={"noisy": [1e-3, 1e-5], "sparse": [0.4, 0.04], "discrete": [16, 1024],
                            "fsq": [[8, 5], [8, 5, 5, 5]]},
                    overrides=["model.latent.reset_every=5000", "log_every=25"]),
    # one GPU, a few hours
    "small": Budget(steps=5000, mae_steps=3000, decoder_steps=3000, eval_clips=512, probe_clips=1024,
                    values={"noisy": [1e-3, 1e-4, 1e-5, 1e-6], "sparse": [0.4, 0.1, 0.04, 0.01],
                            "discrete": [16, 1024, 4096], "fsq": [[8, 5], [8, 5, 5, 5], [8, 8, 8, 6, 5, 5]]},
                    overrides=["model.latent.reset_every=200000"]),
    # the paper's sweep and schedule (30k iterations); use with configs/paper.yaml on many GPUs
    "paper": Budget(steps=30_000, mae_steps=0, decoder_steps=20_000, eval_clips=2048, probe_clips=4096,
                    values=PAPER_VALUES),
}


@dataclass
class RunSpec:
    """One training run of the sweep: ``family`` with ``coefficient = value`` (``None`` for baselines)."""

    family: str
    coefficient: str | None = None
    value: Any = None

    @property
    def name(self) -> str:
        if self.coefficient is None:
            return self.family
        short = {"beta": "beta", "l1": "l1", "codebook_size": "K", "fsq_levels": "L"}[self.coefficient]
        return f"{self.family}-{short}_{format_value(self.value)}"

    def overrides(self) -> list[str]:
        out = [f"model.latent.family={self.family}"]
        if self.coefficient is not None:
            value = "[" + ",".join(str(v) for v in self.value) + "]" if isinstance(self.value, list) else self.value
            out.append(f"model.latent.{self.coefficient}={value}")
        return out


def format_value(value: Any) -> str:
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_values(family: str, text: str) -> list:
    """``"1e-3,1e-4"`` -> floats (or ints for codebooks); fsq levels as ``"8x5,8x5x5x5"``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if family not in COEFFICIENT:
        raise ValueError(f"family {family!r} has no coefficient to sweep (choose from {', '.join(COEFFICIENT)})")
    try:
        if family == "fsq":
            return [[int(level) for level in item.split("x")] for item in items]
        if family == "discrete":
            return [int(item) for item in items]
        return [float(item) for item in items]
    except ValueError as error:
        raise ValueError(f"cannot read the values {text!r} for {family}: {error}") from error


def plan_runs(budget: Budget, families: list[str]) -> list[RunSpec]:
    """Every run of the sweep in a fixed order: each family's coefficients, then the baselines."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    specs = []
    for family in families:
        if family in COEFFICIENT:
            specs += [RunSpec(family, COEFFICIENT[family], v) for v in budget.values.get(family, [])]
        else:
            specs.append(RunSpec(family))
    return specs


# ---------------------------------------------------------------------------------------------- stages


def _checkpoint_step(run_dir: Path) -> int:
    from lavid.training.checkpoint import STATE_FILE, latest_checkpoint

    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return 0
    return int(json.loads((checkpoint / STATE_FILE).read_text()).get("step", 0))


def train_run(spec: RunSpec, run_dir: Path, config: str, overrides: list[str], steps: int,
              launcher: list[str]) -> dict[str, Any]:
    """Train one run to ``steps`` (resuming what a killed sweep left); ``{"status", "error"?}``."""
    done = _checkpoint_step(run_dir)
    if done >= steps:
        return {"status": "trained"}
    if done == 0 and run_dir.exists():  # started but never checkpointed: nothing worth keeping
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [*launcher, str(REPO / "lavid" / "train.py"), "--config", config, *overrides, *spec.overrides(),
               f"steps={steps}", f"out_dir={run_dir}", "progress=false"] + (["resume=true"] if done else [])
    log_path = run_dir.parent / f"{spec.name}.log"
    log.info("training %s%s", spec.name, f" (resuming at step {done})" if done else "")
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        # the caller's working directory: relative paths (--out, data=..., --config) mean the same in the
        # sweep and in its runs
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0 or _checkpoint_step(run_dir) < steps:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        return {"status": "failed", "error": (errors or lines or ["no output"])[-1][:500],
                "log": str(log_path)}
    return {"status": "trained"}


@dataclass
class SweepPaths:
    out: Path

    @property
    def encoder(self) -> Path:
        return self.out / "encoder" / "mae.pth"

    @property
    def features(self) -> Path:
        return self.out / "features"

    @property
    def decoder(self) -> Path:
        return self.out / "decoder.pt"

    def run(self, spec: RunSpec) -> Path:
        return self.out / "runs" / spec.name


def prepare_encoder(config, budget: Budget, paths: SweepPaths, progress: bool) -> str | None:
    """The frozen encoder every run shares: the config's checkpoint, else a MAE-pretrained ViT."""
    if config.model.encoder.checkpoint:
        return config.model.encoder.checkpoint
    if budget.mae_steps <= 0 or config.model.encoder.arch != "vit":
        log.warning("no encoder checkpoint and no MAE stage for this budget and encoder (%s): runs share a frozen "
                    "random encoder", config.model.encoder.arch)
        return None
    if not paths.encoder.exists():
        from lavid.models.mae import MAEConfig
        from lavid.training.pretrain_mae import pretrain_encoder

        log.info("pretraining the shared encoder (MAE, %d steps)", budget.mae_steps)
        summary = pretrain_encoder(config, MAEConfig(steps=budget.mae_steps), str(paths.encoder), progress=progress)
        log.info("MAE loss %.3f -> %.3f", summary["first_loss"], summary["last_loss"])
    return str(paths.encoder)


def prepare_features(config, paths: SweepPaths, progress: bool) -> None:
    """Encode the data once with the shared frozen encoder (kept if it matches)."""
    from lavid.data.store import read_meta
    from lavid.models.encoder import encoder_fingerprint
    from lavid.models.world_model import LatentActionWorldModel
    from lavid.training.feature_cache import build_feature_cache
    from accelerate.utils import set_seed

    meta = read_meta(paths.features)
    if meta and meta.get("complete"):
        set_seed(config.seed)
        fingerprint = encoder_fingerprint(LatentActionWorldModel(config.model).encoder)
        if (meta.get("encoder") == fingerprint and meta.get("data") == config.data.data
                and int(meta.get("frame_stride", 1)) == config.data.frame_stride):
            return
        log.info("feature cache %s was made by another encoder, data or frame stride; rebuilding it", paths.features)
        shutil.rmtree(paths.features)
    build_feature_cache(config, str(paths.features), progress=progress)


def evaluate_run(spec: RunSpec, paths: SweepPaths, budget: Budget, clips: dict, decoder_factory, lpips,
                 progress: bool) -> dict[str, Any]:
    """The latent evals of one trained run, cached in ``eval.json`` next to its checkpoint."""
    from lavid.metrics.latent_evals import evaluate_latents
    from lavid.training.runs import load_run

    run_dir = paths.run(spec)
    cached = run_dir / "eval.json"
    loaded = load_run(run_dir)
    if cached.exists():
        previous = json.loads(cached.read_text())
        if previous.get("checkpoint") == loaded.checkpoint.name:
            return previous
    if "heldout" not in clips:
        from lavid.data.eval_data import load_split

        clips["heldout"] = load_split(loaded.config.data, "heldout", budget.eval_clips, seed=loaded.config.seed)
        clips["train"] = load_split(loaded.config.data, "train", budget.probe_clips, seed=loaded.config.seed)
    decoder = decoder_factory(loaded.model, loaded.config, loaded.run_dir)
    metrics = evaluate_latents(loaded.model, clips["heldout"], loaded.config.rollout_horizon, train=clips["train"],
                               decoder=decoder, lpips=lpips, seed=loaded.config.seed)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = {k: v for row in history for k, v in row.items() if k.startswith("latent/")}
    result = {"checkpoint": loaded.checkpoint.name, "step": loaded.step, **metrics,
              **{f"train/{k}": v for k, v in last.items()}}
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, cached)
    return result


def run_sweep(config_path: str, overrides: list[str], out: str | os.PathLike, budget: Budget, families: list[str],
              jobs: int = 1, launcher: list[str] | None = None, lpips_weights: str | None = None,
              progress: bool = True, budget_name: str = "custom") -> list[dict[str, Any]]:
    """Run (or finish) the whole ablation into ``out``; returns one result row per run."""
    from lavid.core.config import load_config
    from lavid.data.training_data import ensure_default_data
    from lavid.metrics.image_metrics import load_lpips
    from lavid.training.train_config import TrainConfig

    paths = SweepPaths(Path(out).resolve())  # runs store these paths in their configs: absolute
    paths.out.mkdir(parents=True, exist_ok=True)
    launcher = launcher if launcher is not None else [sys.executable]
    base = [*budget.overrides, *overrides]
    config = load_config(TrainConfig, config_path, base)  # unknown keys stop here, before any work
    specs = plan_runs(budget, families)
    for spec in specs:  # every run's config is checked before the first one trains
        load_config(TrainConfig, config_path, [*base, *spec.overrides()])
    ensure_default_data(config.data)

    # A frozen encoder is shared: encoded once, one decoder for all runs. Otherwise each run learns its own.
    shared = config.model.encoder.mode == "frozen"
    if shared:
        encoder = prepare_encoder(config, budget, paths, progress)
        if encoder is not None:
            base.append(f"model.encoder.checkpoint={encoder}")
            config = load_config(TrainConfig, config_path, base)
        prepare_features(config, paths, progress)
        base.append(f"data.features={paths.features}")
    every = max(budget.steps // 4, 1)
    run_overrides = [*base, f"eval_every={budget.steps}", f"checkpoint_every={every}", f"seed={config.seed}"]

    def train_one(spec: RunSpec) -> dict[str, Any]:
        return train_run(spec, paths.run(spec), config_path, run_overrides, budget.steps, launcher)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        trained = dict(zip([s.name for s in specs], pool.map(train_one, specs)))

    decoders: dict[str, Any] = {}

    def decoder_factory(model, run_config, run_dir: Path):
        from lavid.training.fit_decoder import load_or_train_decoder

        key = "shared" if shared else str(run_dir)
        if key not in decoders:
            path = paths.decoder if shared else run_dir / "decoder.pt"
            decoders.clear()  # per-run decoders are used once: keep at most one in memory
            decoders[key] = load_or_train_decoder(model, run_config, path, budget.decoder_steps, progress)
        return decoders[key]

    lpips = load_lpips(lpips_weights)
    clips: dict = {}
    rows = []
    for spec in specs:
        row = {"run": spec.name, "family": spec.family, "coefficient": spec.coefficient or "",
               "value": format_value(spec.value) if spec.value is not None else "", **trained[spec.name]}
        if row["status"] == "trained":
            try:
                row.update(evaluate_run(spec, paths, budget, clips, decoder_factory, lpips, progress))
                row["status"] = "done"
            except Exception as error:  # one broken run must not lose the others' results
                log.exception("evaluating %s failed", spec.name)
                row.update(status="failed", error=f"evaluation: {type(error).__name__}: {error}")
        rows.append(row)
    from lavid.experiments.ablation_report import write_report

    write_report(rows, paths.out, budget_name=budget_name)
    return rows
