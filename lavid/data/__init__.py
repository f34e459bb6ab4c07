"""Stage 1, data: from raw sources to batches of clips.

Takes in: video files, folders and Hugging Face datasets (:mod:`~lavid.data.sources`,
:mod:`~lavid.data.video`, :mod:`~lavid.data.video_index`) and the DeepMind Control simulator with its
behaviour policies (:mod:`~lavid.data.sim`, :mod:`~lavid.data.policies`, :mod:`~lavid.data.trajectories`).
Gives out: an on-disk clip store (:mod:`~lavid.data.store`), clip and feature datasets and a seeded,
resumable loader (:mod:`~lavid.data.clips`), the train / held-out split by episode with its weighted mix
(:mod:`~lavid.data.training_data`, :mod:`~lavid.data.eval_data`), configured by :class:`DataConfig`;
plus the action layout (:mod:`~lavid.data.actions`), clip augmentation and goal images.

Imports only :mod:`lavid.core`. The names below are imported on first use, so ``import lavid.data``
stays free of torch and dm_control.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {  # module: the names it exports here
    "lavid.data.data_config": ("DataConfig",),
    "lavid.data.clips": ("ClipDataset", "DatasetFormatError", "make_loader", "split_by_episode"),
    "lavid.data.training_data": ("build_training_data",),
    "lavid.data.eval_data": ("load_split",),
    "lavid.data.actions": ("transition_actions",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

