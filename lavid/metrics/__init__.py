"""Stage 4, metrics: what a trained world model has learned, measured.

Takes in: trained models and runs (:mod:`lavid.training`) and held-out clips (:mod:`lavid.data`).
Gives out: numbers, tables and pictures: the latent evals (prediction errors, leakage of the next frame
into the latent, cycle transfer between videos, sampled rollouts, pixel metrics; :func:`evaluate_latents`),
linear probes of the true action from the latent (:func:`action_probe`) and of the simulator's pose from
the encoder (:func:`probe_model`), the probes run right after training (:func:`probe_after_training`) and
the ablation sweep with its report (:func:`run_sweep`).

Imports every stage below it (core, data, models, training), never :mod:`lavid.control`. The names below
are imported on first use, so ``import lavid.metrics`` stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {
    "evaluate_latents": "lavid.metrics.latent_evals",
    "action_probe": "lavid.metrics.latent_evals",
    "linear_probe": "lavid.metrics.probe",
    "probe_model": "lavid.metrics.state_probe",
    "probe_after_training": "lavid.metrics.training_probes",
    "run_sweep": "lavid.metrics.ablation",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
