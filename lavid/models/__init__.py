"""Stage 2, models: the networks, as modules and small helpers (no training loops).

Takes in: clips of frames ``[B, T, 3, H, W]`` uint8 (or cached features) and, for action-conditioned
models, actions, laid out by :mod:`lavid.data.actions`.
Gives out: the latent-action world model (:class:`LatentActionWorldModel`: frame encoder, inverse dynamics
model, latent family, predictor, SIGReg; its loss and rollouts), the pixel decoder that paints its
representations, and the masked autoencoder used to pretrain the encoder. Fitting any of them is
:mod:`lavid.training`'s job.

Imports only :mod:`lavid.core` and :mod:`lavid.data`. The names below are imported on first use, so
``import lavid.models`` stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {
    "LatentActionWorldModel": "lavid.models.world_model",
    "ModelConfig": "lavid.models.world_model",
    "FrameEncoder": "lavid.models.encoder",
    "normalize_frames": "lavid.models.encoder",
    "encoder_fingerprint": "lavid.models.encoder",
    "PixelDecoder": "lavid.models.decoder",
    "DecoderError": "lavid.models.decoder",
    "load_decoder": "lavid.models.decoder",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
