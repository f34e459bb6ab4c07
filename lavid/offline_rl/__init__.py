"""Offline RL with latent actions: learn to act from few action-labeled and many unlabeled trajectories.

Takes in: trajectories of the simulator's proprioceptive state (a SAC agent's replay buffer, or episodes
rolled out by ``data_prep/dmc.py``), most of them without actions.
Gives out: a latent-action policy executed in the real simulator, and its score.

- :class:`SAC` (``sac.py``, trained by ``expert.py``) makes datasets of known quality.
- :func:`split_labeled` (``offline_data.py``) removes the actions of most episodes.
- :class:`StateWorldModel` (``state_world_model.py``) learns one latent-action space from both parts, over
  state vectors: an IDM on every transition, an action encoder and decoder on the labeled ones, a prior,
  a reward head. It is *not* :class:`lavid.models.world_model.LatentActionWorldModel` (the project's
  pixel world model of video, with a ViT or conv encoder and a frame-causal predictor); see its docstring
  for why the two stay apart.
- :func:`train_policy` (``imagination.py``) learns a latent policy in the model's imagination;
  ``model_evals.py`` scores the model on the unlabeled episodes; ``methods.py`` holds the methods compared
  (latent, labeled-only, behaviour cloning, random) and their evaluation in the simulator.

It sits on ``lavid.training`` and may import every stage below it, but not its siblings ``lavid.metrics``
and ``lavid.planning`` (``tests/test_layout.py`` checks it). The names below are imported on first use, so
``import lavid.offline_rl`` stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {  # module: the names it exports here
    "lavid.offline_rl.sac": ("SAC", "SACConfig"),
    "lavid.offline_rl.expert": ("train_expert",),
    "lavid.offline_rl.offline_data": ("split_labeled", "load_offline"),
    "lavid.offline_rl.state_world_model": ("StateWorldModel", "train_state_world_model"),
    "lavid.offline_rl.imagination": ("train_policy",),
    "lavid.offline_rl.methods": ("run_method",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

