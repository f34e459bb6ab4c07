"""Fitting the pixel decoder (:mod:`lavid.models.decoder`) to a frozen world model's representations.

The world model is never trained through the decoder: it stays frozen while the decoder learns, with an L1
loss on pixels in [0, 1], to paint the real frames back from the encoder's (target) features. A fitted
decoder is saved with the fingerprint of the encoder it decodes and reused for that encoder only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from lavid.models.decoder import (DecoderConfig, DecoderError, PixelDecoder, load_decoder, make_decoder, save_decoder,
                                  to_unit)

log = logging.getLogger(__name__)


def train_decoder(model, batches: Callable[[int], Iterable[dict]], config: DecoderConfig | None = None,
                  seed: int = 0, progress: bool = True) -> tuple[PixelDecoder, list[float]]:
    """Fit a decoder to ``model``'s (target) representations of real frames; ``model`` stays frozen.

    Args:
        model: a :class:`~lavid.models.world_model.LatentActionWorldModel` (its encoder's features are decoded).
        batches: ``epoch -> iterable of {"frames": uint8 [B, T, 3, H, W]}``.

    Returns:
        ``(decoder in eval mode, loss per step)``.
    """
    from tqdm.auto import tqdm

    config = config or DecoderConfig()
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    decoder = make_decoder(model, config).to(device)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.1)
    model.eval()
    losses, epoch = [], 0
    bar = tqdm(total=config.steps, disable=not progress, desc="pixel decoder", unit="step")
    while len(losses) < config.steps:
        seen = False
        for batch in batches(epoch):
            seen = True
            frames = batch["frames"].to(device)
            with torch.no_grad():
                states = model.encode(frames, target=True)
            loss = F.l1_loss(decoder(states), to_unit(frames))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(l1=f"{loss.item():.4f}")
            if len(losses) >= config.steps:
                break
        if not seen:
            raise ValueError("the decoder's training data yielded no batches")
        epoch += 1
    bar.close()
    return decoder.eval(), losses


def training_frames(config, batch_size: int) -> Callable[[int], Iterable[dict]]:
    """``epoch -> loader`` over the training split's frames of a run config (never its feature cache)."""
    import dataclasses

    from lavid.data.clips import make_loader
    from lavid.data.training_data import build_training_data

    data = build_training_data(dataclasses.replace(config.data, features=None), config.model.encoder.tubelet)
    batch_size = min(batch_size, len(data.train))  # a small dataset still gives full batches
    return lambda epoch: make_loader(data.train, batch_size, seed=config.seed, epoch=epoch,
                                     num_workers=config.data.num_workers)


def load_or_train_decoder(model, config, path: str | os.PathLike, steps: int, progress: bool = True,
                          fallbacks: Iterable[Path] = ()) -> PixelDecoder:
    """The decoder at ``path`` (or the first of ``fallbacks``) if it fits ``model``'s encoder; otherwise
    one trained on the training frames of ``config`` for ``steps`` and saved at ``path``."""
    from lavid.models.encoder import encoder_fingerprint

    fingerprint = encoder_fingerprint(model.encoder)
    device = next(model.parameters()).device
    for candidate in (Path(path), *fallbacks):
        if candidate.exists():
            try:
                return load_decoder(candidate, fingerprint, device)
            except DecoderError as error:
                log.info("%s", error)
    log.info("no pixel decoder for this encoder yet: training one (%d steps) on the training frames", steps)
    decoder_config = DecoderConfig(steps=steps)
    decoder, losses = train_decoder(model, training_frames(config, decoder_config.batch_size), decoder_config,
                                    seed=config.seed, progress=progress)
    save_decoder(decoder, path, fingerprint, {"losses": losses})
    return decoder


def decoder_for_run(loaded, path: str | os.PathLike | None = None, steps: int = 600, progress: bool = True):
    """The pixel decoder of a loaded run (:class:`lavid.training.runs.LoadedRun`).

    Uses ``path`` if given (it must fit), else ``RUN_DIR/decoder.pt``, else the shared decoder of the
    ablation sweep the run belongs to; when none fits the run's encoder, trains one on the run's training
    frames for ``steps`` and saves it as ``RUN_DIR/decoder.pt``.
    """
    if path is not None:
        from lavid.models.encoder import encoder_fingerprint

        return load_decoder(path, encoder_fingerprint(loaded.model.encoder), next(loaded.model.parameters()).device)
    return load_or_train_decoder(loaded.model, loaded.config, loaded.run_dir / "decoder.pt", steps, progress,
                                 fallbacks=[loaded.run_dir.parent.parent / "decoder.pt"])
