"""Encode clips once with a frozen encoder and store the features: training then skips the encoder.

The cache records a fingerprint of the encoder's weights; training refuses a cache made by different
weights (a different seed, checkpoint or size), which would otherwise train on the wrong inputs silently.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from lavid.data.store import FORMAT, FORMAT_VERSION, META_FILE, check_writable
from lavid.models.encoder import encoder_fingerprint

log = logging.getLogger(__name__)


@torch.no_grad()
def build_feature_cache(config, out: str, batch_size: int = 16, device: str | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Encode the first ``config.data.frames`` (kept) frames of every clip of ``config.data.data`` into ``out``.

    Rows: ``dataset``, ``source``, ``clip``, ``features [S, N, D]`` and, when every source has actions,
    ``actions [T, r·A]`` (``r = data.frame_stride``; each stored frame's action zero-padded to ``A``:
    ``model.action_dim``, or the largest among the sources when it is 0). The meta records ``frame_stride``,
    ``action_dim`` (0: no actions) and ``without_actions`` (the sources that have none).

    Args:
        config: a :class:`lavid.training.train_config.TrainConfig` with ``model.encoder.mode=frozen``.
    """
    import datasets
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from lavid.data.clips import ClipDataset
    from lavid.data.training_data import source_action_dims
    from lavid.models.encoder import FrameEncoder, normalize_frames

    if config.model.encoder.mode != "frozen":
        raise ValueError("model.encoder.mode must be frozen to cache features (a finetuned encoder changes them)")
    out_path = check_writable(out)
    data = config.data
    action_dims = source_action_dims(data)
    without = [path for path, dim in action_dims.items() if dim is None]
    action_dim = 0 if without else max(config.model.action_dim, *action_dims.values())
    set_seed(config.seed)  # the same initialization as lavid/train.py (the model builds its encoder first)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = FrameEncoder(config.model.encoder).eval().to(device)
    steps = data.frames // config.model.encoder.tubelet
    shape = (steps, encoder.num_tokens, encoder.dim)
    columns = {
        "dataset": datasets.Value("string"),
        "source": datasets.Value("string"),
        "clip": datasets.Value("int64"),
        "features": datasets.Array3D(shape=shape, dtype="float32"),
    }
    if action_dim:
        columns["actions"] = datasets.Array2D(shape=(data.frames, data.frame_stride * action_dim), dtype="float32")

    def rows():
        for path, _ in data.sources():
            dataset = ClipDataset(path, columns=["action"] if action_dim else [], max_frames=data.frames,
                                  frame_stride=data.frame_stride, pad_actions=action_dim or None)
            sources = dataset.clips["source"]
            loader = DataLoader(dataset, batch_size=batch_size, num_workers=data.num_workers)
            for batch in tqdm(loader, desc=f"encoding {path}", disable=not progress):
                encoded = encoder(normalize_frames(batch["frames"].to(device))).float().cpu().numpy()
                for i, (index, tokens) in enumerate(zip(batch["index"].tolist(), encoded)):
                    row = {"dataset": path, "source": sources[index], "clip": index, "features": tokens}
                    if action_dim:
                        row["actions"] = batch["action"][i].float().numpy()
                    yield row

    work = out_path / ".work"
    shutil.rmtree(work, ignore_errors=True)
    table = datasets.Dataset.from_generator(rows, features=datasets.Features(columns), cache_dir=str(work))
    target = out_path / "clips"
    shutil.rmtree(target, ignore_errors=True)
    table.save_to_disk(str(target))
    del table
    shutil.rmtree(work, ignore_errors=True)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": "features", "data": data.data,
            "frames": data.frames, "frame_stride": data.frame_stride, "action_dim": action_dim,
            "without_actions": without, "encoder": encoder_fingerprint(encoder),
            "shape": list(shape), "counts": {"clips": len(datasets.load_from_disk(str(target)))}, "complete": True}
    (out_path / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def ensure_feature_cache(config, out: str, progress: bool = True) -> bool:
    """The feature cache of ``config`` at ``out``: kept when a complete one there was made by the same encoder
    weights, data and frame stride, else (re)built with :func:`build_feature_cache`. Returns whether it built."""
    from accelerate.utils import set_seed

    from lavid.data.store import read_meta
    from lavid.models.encoder import FrameEncoder

    meta = read_meta(out)
    if meta and meta.get("complete"):
        set_seed(config.seed)  # the encoder as build_feature_cache and lavid/train.py build it (first, after the seed)
        fingerprint = encoder_fingerprint(FrameEncoder(config.model.encoder))
        if (meta.get("encoder") == fingerprint and meta.get("data") == config.data.data
                and int(meta.get("frame_stride", 1)) == config.data.frame_stride):
            return False
        log.info("feature cache %s was made by another encoder, data or frame stride; rebuilding it", out)
        shutil.rmtree(out)
    build_feature_cache(config, out, progress=progress)
    return True
