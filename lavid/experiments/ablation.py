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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lavid.core.config import check
from lavid.experiments.runner import run_jobs, train_subprocess
from lavid.models import latents
from lavid.models.latents import format_value

log = logging.getLogger(__name__)

COEFFICIENT = {spec.name: spec.coefficient for spec in latents.families() if spec.coefficient}
"""The swept coefficient of each family, from the latent-family registry (baselines such as ``none`` and
``deterministic`` have none)."""

PAPER_VALUES: dict[str, list] = {spec.name: spec.default_values() for spec in latents.families() if spec.coefficient}
"""The reference paper's sweep of each swept family (``FamilySpec.paper_values``)."""

FAMILIES = latents.FAMILIES
"""Every registered family, in the default order."""


@dataclass
class Budget:
    """How much each stage gets (a preset of ``configs/experiments/ablate/``).

    Attributes:
        steps: optimizer steps per run. mae_steps: encoder pretraining when the config has no checkpoint.
        decoder_steps: pixel decoder training. eval_clips / probe_clips: held-out clips evaluated and
        training clips the probe is fit on. values: the coefficients swept per family (a swept family not
        named sweeps its registry values). overrides: extra ``key=value`` for every run.
    """

    steps: int = 400
    mae_steps: int = 200
    decoder_steps: int = 100
    eval_clips: int = 64
    probe_clips: int = 128
    values: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    def validate(self, prefix: str = "") -> None:
        for name in ("steps", "decoder_steps", "eval_clips", "probe_clips"):
            check(getattr(self, name) >= 1, name.replace("_", "-"), f"must be >= 1, got {getattr(self, name)}")
        check(self.mae_steps >= 0, "mae-steps", f"must be >= 0, got {self.mae_steps}")


def load_budget(name: str, overrides: list[str] = ()) -> Budget:
    """Budget preset ``name`` (``smoke``, ``small``, ``paper`` or a YAML file) with ``key=value`` overrides."""
    from lavid.experiments.presets import load_preset

    return load_preset(Budget, "ablate", name, list(overrides))


@dataclass
class RunSpec:
    """One training run of the sweep: ``family`` with ``coefficient = value`` (``None`` for baselines).

    Attributes:
        family: a registered latent family.
        coefficient: the config field swept (``model.latent.<coefficient>``), ``None`` for a baseline.
        value: its value in this run.
    """

    family: str
    coefficient: str | None = None
    value: Any = None

    @property
    def name(self) -> str:
        """The run's folder name: ``noisy-beta_0.001``, ``discrete-K_16``, ``fsq-L_8x5``, ``none``."""
        if self.coefficient is None:
            return self.family
        return f"{self.family}-{latents.get_family(self.family).short}_{format_value(self.value)}"

    def overrides(self) -> list[str]:
        out = [f"model.latent.family={self.family}"]
        if self.coefficient is not None:
            value = "[" + ",".join(str(v) for v in self.value) + "]" if isinstance(self.value, list) else self.value
            out.append(f"model.latent.{self.coefficient}={value}")
        return out


def parse_values(family: str, text: str) -> list:
    """A family's sweep values from the command line, read by the family's own parser.

    Args:
        family: a registered family with a swept coefficient.
        text: comma-separated values: ``"1e-3,1e-4"`` (floats), ``"16,1024"`` (codebook sizes), FSQ levels as
            ``"8x5,8x5x5x5"``.

    Raises:
        ValueError: the family sweeps nothing or is unknown, or a value does not parse.
    """
    swept = [spec.name for spec in latents.families() if spec.coefficient]
    if family not in swept:
        raise ValueError(f"family {family!r} has no coefficient to sweep (choose from {', '.join(swept)})")
    return latents.get_family(family).parse_values(text)


def plan_runs(budget: Budget, families: list[str]) -> list[RunSpec]:
    """Every run of the sweep in a fixed order: each family's coefficients, then the baselines.

    Args:
        budget: its ``values`` name the coefficients swept per family; a swept family absent from them
            sweeps its registry default (``FamilySpec.paper_values``, the reference paper's sweep).
        families: registered family names, in the order their runs are planned.

    Raises:
        ValueError: a family is not registered.
    """
    registered = latents.names()
    unknown = [f for f in families if f not in registered]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {', '.join(registered)}")
    specs = []
    for family in families:
        spec = latents.get_family(family)
        if spec.coefficient is None:
            specs.append(RunSpec(family))
            continue
        values = budget.values[family] if family in budget.values else spec.default_values()
        specs += [RunSpec(family, spec.coefficient, v) for v in values]
    return specs


# ---------------------------------------------------------------------------------------------- stages


def train_run(spec: RunSpec, run_dir: Path, config: str, overrides: list[str], steps: int,
              launcher: list[str]) -> dict[str, Any]:
    """Train one run to ``steps`` (resuming what a killed sweep left), its output in ``RUN.log`` beside it;
    ``{"status", "error"?, "log"?}`` (:func:`lavid.experiments.runner.train_subprocess`)."""
    return train_subprocess(run_dir, steps, [*overrides, *spec.overrides()], config=config, launcher=launcher,
                            log_path=run_dir.parent / f"{spec.name}.log")


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
    from lavid.training.feature_cache import ensure_feature_cache

    ensure_feature_cache(config, str(paths.features), progress=progress)


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

        # with the stored states (where the data has them): the action probes' ceilings read the true poses
        clips["heldout"] = load_split(loaded.config.data, "heldout", budget.eval_clips, seed=loaded.config.seed,
                                      states=True)
        clips["train"] = load_split(loaded.config.data, "train", budget.probe_clips, seed=loaded.config.seed,
                                    states=True)
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

    def train_one(spec: RunSpec) -> tuple[str, dict[str, Any]]:
        return spec.name, train_run(spec, paths.run(spec), config_path, run_overrides, budget.steps, launcher)

    # runs wait on their own processes: threads are enough to run ``jobs`` of them at once
    trained = dict(run_jobs(train_one, [{"spec": spec} for spec in specs], workers=jobs, kind="thread",
                            progress=False))

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
