"""Stage 4, metrics: what a trained world model has learned, measured.

Takes in: trained models and runs (:mod:`lavid.training`) and held-out clips (:mod:`lavid.data`).
Gives out: numbers, tables and pictures: the latent evals (prediction errors, leakage of the next frame
into the latent, cycle transfer between videos, sampled rollouts, pixel metrics; :func:`evaluate_latents`),
linear and MLP probes of the true action from the latent (:func:`action_probe`) and of the simulator's pose from
the encoder (:func:`probe_model`) and the probes run right after training (:func:`probe_after_training`). The ablation sweep that
runs these over many trainings lives one stage up, in :mod:`lavid.experiments`.

Imports every stage below it (core, data, models, training), never its siblings :mod:`lavid.planning` and
:mod:`lavid.offline_rl`. The names below
are imported on first use, so ``import lavid.metrics`` stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {  # module: the names it exports here
    "lavid.metrics.latent_evals": ("evaluate_latents", "action_probe"),
    "lavid.metrics.probe": ("linear_probe", "mlp_probe"),
    "lavid.metrics.state_probe": ("probe_model",),
    "lavid.metrics.training_probes": ("probe_after_training",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

