"""Encode clips once with a frozen encoder and store the features: training then skips the encoder.

The cache records a fingerprint of the encoder's weights; training refuses a cache made by different
weights (a different seed, checkpoint or size), which would otherwise train on the wrong inputs silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from lavid.store import FORMAT, FORMAT_VERSION, META_FILE, check_writable

log = logging.getLogger(__name__)


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """A short hash of an encoder's weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def build_feature_cache(config, out: str, batch_size: int = 16, device: str | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Encode the first ``config.data.frames`` frames of every clip of ``config.data.data`` into ``out``.

    Args:
        config: a :class:`lavid.train_config.TrainConfig` with ``model.encoder.mode=frozen``.
    """
    import datasets
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from lavid.data import ClipDataset
    from lavid.world_model import LatentActionWorldModel

    if config.model.encoder.mode != "frozen":
        raise ValueError("model.encoder.mode must be frozen to cache features (a finetuned encoder changes them)")
    out_path = check_writable(out)
    set_seed(config.seed)  # the same initialization as lavid/train.py
    model = LatentActionWorldModel(config.model).eval()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = model.encoder.to(device)
    steps = config.data.frames // config.model.encoder.tubelet
    shape = (steps, encoder.num_tokens, encoder.dim)
    features = datasets.Features({
        "dataset": datasets.Value("string"),
        "source": datasets.Value("string"),
        "clip": datasets.Value("int64"),
        "features": datasets.Array3D(shape=shape, dtype="float32"),
    })
    from lavid.encoder import normalize_frames

    def rows():
        for path, _ in config.data.sources():
            dataset = ClipDataset(path, columns=[], max_frames=config.data.frames)
            sources = dataset.clips["source"]
            loader = DataLoader(dataset, batch_size=batch_size, num_workers=config.data.num_workers)
            for batch in tqdm(loader, desc=f"encoding {path}", disable=not progress):
                encoded = encoder(normalize_frames(batch["frames"].to(device))).float().cpu().numpy()
                for index, tokens in zip(batch["index"].tolist(), encoded):
                    yield {"dataset": path, "source": sources[index], "clip": index, "features": tokens}

    work = out_path / ".work"
    shutil.rmtree(work, ignore_errors=True)
    table = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(work))
    target = out_path / "clips"
    shutil.rmtree(target, ignore_errors=True)
    table.save_to_disk(str(target))
    del table
    shutil.rmtree(work, ignore_errors=True)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": "features", "data": config.data.data,
            "frames": config.data.frames, "encoder": encoder_fingerprint(model.encoder),
            "shape": list(shape), "counts": {"clips": len(datasets.load_from_disk(str(target)))}, "complete": True}
    (out_path / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta
