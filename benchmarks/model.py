"""Training-step time of the world model on this machine, and the predictor's mask cost.

1. Forward + backward + AdamW step at the tiny size (the default config: 64 px, 8 frames) and at a mid
   size (128 px, ViT-S-like encoder and predictor), frozen and EMA-finetuned encoders.
2. The frame-causal predictor with its cached mask vs the same predictor building a dense boolean
   mask on every call (the naive way); interleaved runs, medians.

Usage:
    python benchmarks/model.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lavid.config import from_dict  # noqa: E402
from lavid.predictor import Predictor, PredictorConfig  # noqa: E402
from lavid.world_model import LatentActionWorldModel, ModelConfig  # noqa: E402

SIZES = {
    "tiny (64 px, enc 128x4, pred 192x4)": ({}, 8, 8),
    "mid (128 px, enc 384x6, pred 384x6)": ({
        "encoder": {"img_size": 128, "patch_size": 16, "embed_dim": 384, "depth": 6, "num_heads": 6},
        "idm": {"dim": 256, "depth": 2, "num_heads": 4},
        "predictor": {"dim": 384, "depth": 6, "num_heads": 6},
    }, 8, 8),
}


def step_time(overrides: dict, mode: str, batch: int, frames: int, repeats: int) -> float:
    data = {k: dict(v) for k, v in overrides.items()}
    data.setdefault("encoder", {})["mode"] = mode
    config = from_dict(ModelConfig, data)
    torch.manual_seed(0)
    model = LatentActionWorldModel(config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size = config.encoder.img_size
    clips = torch.randint(0, 256, (batch, frames, 3, size, size), dtype=torch.uint8)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = model(clips)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        model.update_ema()
        if i:  # the first step warms allocators up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def mask_comparison(repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    config = PredictorConfig(dim=192, depth=4, num_heads=4)
    cached = Predictor(config, 128, 64, 128, cache_mask=True)
    naive = Predictor(config, 128, 64, 128, cache_mask=False)
    naive.load_state_dict(cached.state_dict())
    states, cond = torch.randn(8, 7, 64, 128), torch.randn(8, 7, 128)
    timings = {"cached": [], "naive": []}
    with torch.no_grad():
        for _ in range(repeats + 1):
            for name, predictor in (("cached", cached), ("naive", naive)):
                start = time.perf_counter()
                predictor(states, cond)
                timings[name].append(time.perf_counter() - start)
    return statistics.median(timings["cached"][1:]), statistics.median(timings["naive"][1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch 8 clips x 8 frames, noisy latents, AdamW")
    print("| size | encoder | s / step (median) | clips / s |")
    print("|---|---|---|---|")
    for name, (overrides, batch, frames) in SIZES.items():
        for mode in ("frozen", "ema"):
            seconds = step_time(overrides, mode, batch, frames, args.repeats)
            print(f"| {name} | {mode} | {seconds:.3f} | {batch / seconds:.1f} |")
    cached, naive = mask_comparison(args.repeats * 4)
    print()
    print("| predictor forward (8 x 7 steps x 64 tokens) | ms (median) |")
    print("|---|---|")
    print(f"| cached frame-causal mask | {cached * 1000:.1f} |")
    print(f"| dense mask built per call | {naive * 1000:.1f} |")
    print(f"| ratio naive / cached | {naive / cached:.2f} |")


if __name__ == "__main__":
    main()
