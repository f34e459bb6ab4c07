"""The probes lavid/train.py runs on a model right after training (``probe_episodes > 0``).

The state probe (:mod:`lavid.metrics.state_probe`): how well the trained encoder's features give the
simulator's pose; the action probe (:func:`lavid.metrics.latent_evals.action_probe`): how well the latent
gives the true action. The trainer calls them through its ``after_training`` hook, so that training does
not import the analyses built on top of it. Both are imported only when called, after training, as before.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lavid.training.train_config import TrainConfig

log = logging.getLogger(__name__)

ACTION_KINDS = ("z", "z_mlp", "change", "ceiling", "ceiling_mlp", "pose_mlp", "z_pose_mlp")
"""The action probe's values logged as ``probe/action_{kind}/{task}`` and ``probe/action_{kind}/mean``: R² of
the linear and the MLP probe from z, of the linear probe from the feature change, of the linear and
the MLP probe from the true poses at t and t+1 (z's ceilings), and of the MLP probes from the pose at t alone
and beside z (:func:`lavid.metrics.latent_evals.action_probe`)."""


def probe_after_training(model, config: TrainConfig, out: Path) -> dict[str, float]:
    """The trained encoder's state probe on the sources that store simulator states, and the latent's
    action probe on those with actions (neither: nothing); writes ``state_probe.md`` / ``action_probe.md``
    into ``out`` and returns the ``probe/...`` values for the run's log."""
    from lavid.metrics.state_probe import StateProbeError, format_table, probe_model

    paths = [path for path, _ in config.data.sources()]
    try:
        result = probe_model(model, paths, config.data.holdout_fraction, config.probe_episodes, seed=config.seed)
    except StateProbeError as error:  # the run is done and saved: report, do not fail it
        log.warning("state probe skipped: %s", error)
        result = None
    summary: dict[str, float] = {}
    if result is not None and result.state:
        summary = result.summary()
        (out / "state_probe.md").write_text(format_table(result) + "\n")
    summary.update(_action_probe(model, config, out))
    return summary


def _action_probe(model, config: TrainConfig, out: Path) -> dict[str, float]:
    """Is z the action? :func:`lavid.metrics.latent_evals.action_probe` where the data has actions (else nothing)."""
    import numpy as np

    from lavid.data.clips import DatasetFormatError
    from lavid.metrics.latent_evals import action_probe, format_action_probe

    try:
        result = action_probe(model, config.data, seed=config.seed)
    except (DatasetFormatError, ValueError) as error:  # the run is done and saved: report, do not fail it
        log.warning("action probe skipped: %s", error)
        return {}
    if not result:
        return {}
    (out / "action_probe.md").write_text(format_action_probe(result) + "\n")
    # z (linear), z_mlp, change, z's ceilings from the true poses and the probes given the pose where there are any
    summary = {f"probe/action_{kind}/{task}": row[kind] for task, row in result.items() for kind in ACTION_KINDS
               if kind in row}
    for kind in ACTION_KINDS:  # the mean over the tasks with a finite value (NaN: none has)
        values = [row[kind] for row in result.values() if kind in row]
        if values:
            finite = [v for v in values if not np.isnan(v)]
            summary[f"probe/action_{kind}/mean"] = float(np.mean(finite)) if finite else float("nan")
    return summary
