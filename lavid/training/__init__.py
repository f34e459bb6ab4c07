"""Stage 3, training: every loop that fits something, and the runs they leave.

Takes in: a :class:`TrainConfig` (``configs/*.yaml`` + ``key=value``), the data stage's clips or
feature cache and the model stage's modules.
Gives out: a run folder (``config.yaml``, checkpoints, ``metrics.jsonl`` with the held-out eval of
:mod:`~lavid.training.evaluation`, rollout pictures) written by :func:`train`, opened again by
:func:`load_run`; and the other fits: the feature cache of a frozen encoder
(:mod:`~lavid.training.feature_cache`), MAE pretraining (:mod:`~lavid.training.pretrain_mae`) and the
pixel decoder (:mod:`~lavid.training.fit_decoder`).

Imports core, data and models, never metrics or control (what runs after training comes in through
``train``'s ``after_training`` hook). The names below are imported on first use, so
``import lavid.training`` stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {  # module: the names it exports here
    "lavid.training.train_config": ("TrainConfig", "build_model"),
    "lavid.training.trainer": ("train",),
    "lavid.training.runs": ("load_run", "LoadedRun", "RunError"),
    "lavid.training.feature_cache": ("build_feature_cache",),
    "lavid.training.pretrain_mae": ("pretrain_encoder",),
    "lavid.training.fit_decoder": ("decoder_for_run",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

