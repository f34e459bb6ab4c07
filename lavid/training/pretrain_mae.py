"""MAE pretraining of the frame encoder (:mod:`lavid.models.mae`) on the training split of a run's data.

The result is saved as a timm state dict, which ``model.encoder.checkpoint`` loads like any other.
"""

from __future__ import annotations

import torch

from lavid.models.encoder import FrameEncoder
from lavid.models.mae import MAEConfig, MaskedAutoencoder
from lavid.training.trainer import lr_lambda


def pretrain_encoder(train_config, mae_config: MAEConfig, out: str, progress: bool = True) -> dict:
    """MAE-pretrain the encoder of ``train_config.model`` on the training split of its data; save it.

    The encoder is saved as a timm state dict at ``out`` (load with ``model.encoder.checkpoint=out``).
    Only training clips are used, never the held-out ones the world model is evaluated on.

    Returns:
        ``{"first_loss", "last_loss", "steps", "out"}``.
    """
    import json
    from pathlib import Path

    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from lavid.data.clips import make_loader
    from lavid.data.training_data import build_training_data

    set_seed(train_config.seed)
    data = build_training_data(train_config.data, train_config.model.encoder.tubelet)
    if data.kind != "frames":
        raise ValueError("MAE pretraining needs frames, not a feature cache")
    encoder_config = train_config.model.encoder
    if encoder_config.arch != "vit":
        raise ValueError(f"MAE pretraining needs model.encoder.arch=vit, got {encoder_config.arch!r} "
                         "(a conv encoder is trained end to end: model.encoder.mode=e2e)")
    encoder = FrameEncoder(encoder_config)
    model = MaskedAutoencoder(encoder, mae_config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=mae_config.lr, weight_decay=mae_config.weight_decay,
                                  betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(mae_config.steps, 0.1, 0.0))
    generator = torch.Generator().manual_seed(train_config.seed)
    losses, step, epoch = [], 0, 0
    bar = tqdm(total=mae_config.steps, disable=not progress, desc="MAE pretraining", unit="step")
    batch_size = min(mae_config.batch_size, len(data.train))  # a small dataset still gives full batches
    while step < mae_config.steps:
        loader = make_loader(data.train, batch_size, seed=train_config.seed, epoch=epoch,
                             num_workers=train_config.data.num_workers, weights=data.weights)
        if len(loader) == 0:  # never loop forever on an epoch without a batch
            raise ValueError(f"the training split of {train_config.data.data} gives no batch of {batch_size} clips")
        for batch in loader:
            loss = model(batch["frames"], generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= mae_config.steps:
                break
        epoch += 1
    bar.close()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(encoder.vit.state_dict(), tmp)
    tmp.replace(path)
    summary = {"first_loss": sum(losses[:10]) / len(losses[:10]), "last_loss": sum(losses[-10:]) / len(losses[-10:]),
               "steps": step, "out": str(path)}
    path.with_suffix(".json").write_text(json.dumps({**summary, "losses": losses}, indent=1))
    return summary
