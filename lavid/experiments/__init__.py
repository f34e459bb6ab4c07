"""Stage 5, experiments: many trainings and evaluations run as one resumable sweep, and their tables.

Takes in: configs and presets (``configs/experiments/*.yaml``) and every stage below: training runs
(:mod:`lavid.training`), their analyses (:mod:`lavid.metrics`), planning (:mod:`lavid.planning`) and offline
RL (:mod:`lavid.offline_rl`).
Gives out: ``results.{md,csv,json}`` (and plots) in an output folder, one row per run or method.

- ``runner.py``: the resumable job runner. Each finished job's row is appended to ``runs.jsonl`` with the
  signature of what produced it; a rerun skips rows whose signature matches, a killed sweep loses only the
  job that was running, and independent jobs can run side by side in spawned worker processes.
- ``results.py``: one writer for ``results.md`` / ``.csv`` / ``.json``.
- ``presets.py``: budgets and presets as typed configs loaded from YAML.
- ``ablation.py`` (+ ``ablation_report.py``): every latent family over its capacity sweep
  (``evals/ablate.py``); ``offline_rl.py``: the offline-RL comparison (``evals/offline_rl.py``);
  ``planning.py``: closed-loop planning in the simulator (``evals/plan.py``).

The names below are imported on first use, so ``import lavid.experiments`` stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {  # module: the names it exports here
    "lavid.experiments.ablation": ("run_sweep",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

