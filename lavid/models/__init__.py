"""Stage 2, models: the networks, as modules and small helpers (no training loops).

Takes in: clips of frames ``[B, T, 3, H, W]`` uint8 (or cached features) and, for action-conditioned
models, actions, laid out by :mod:`lavid.data.actions`.
Gives out: the latent-action world model (:class:`LatentActionWorldModel`: frame encoder, inverse dynamics
model, latent family, predictor, SIGReg; its loss and rollouts), the pixel decoder that paints its
representations, and the masked autoencoder used to pretrain the encoder. The latent families live in
:mod:`lavid.models.latents`, one module each, found by its registry. Fitting any of them is
:mod:`lavid.training`'s job.

Imports only :mod:`lavid.core` and :mod:`lavid.data`. The names below are imported on first use, so
``import lavid.models`` stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {  # module: the names it exports here
    "lavid.models.world_model": ("LatentActionWorldModel", "ModelConfig"),
    "lavid.models.encoder": ("FrameEncoder", "normalize_frames", "encoder_fingerprint"),
    "lavid.models.decoder": ("PixelDecoder", "DecoderError", "load_decoder"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

