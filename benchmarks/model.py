"""Training-step time of the world model on this machine, and the predictor's mask cost.

1. Forward + backward + AdamW step at the tiny size (the default config: 64 px, 8 frames) and at a mid
   size (128 px, ViT-S-like encoder and predictor), frozen and EMA-finetuned encoders.
2. The frame-causal predictor with its cached mask vs the same predictor building a dense boolean
   mask on every call (the naive way); interleaved runs, medians.
3. The default model's training step (configs/tiny.yaml: conv encoder end to end, batch 16 × 8 frames)
   in float32, under bf16 autocast on the CPU, and through ``torch.compile``; interleaved, medians,
   with each variant's first step (compilation) and first loss. (A compiled graph draws its random
   numbers with its own generator, so its loss differs from the eager one in the noise, not the model.)

Usage:
    python benchmarks/model.py [--repeats 5] [--threads 2] [--skip-sizes] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lavid.core.config import from_dict
from lavid.models.predictor import Predictor, PredictorConfig
from lavid.models.world_model import LatentActionWorldModel, ModelConfig

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


def default_step_times(repeats: int, compile_model: bool) -> dict[str, tuple[float, float]]:
    """``{variant: (median s / step, loss of the first step, s of the first step)}`` for the default config's model, one
    optimizer step per variant in turn (each variant has its own copy of the same initial weights)."""
    import copy

    from lavid.core.cli import DEFAULT_CONFIG
    from lavid.core.config import load_config
    from lavid.training.train_config import TrainConfig, build_model

    config = load_config(TrainConfig, str(DEFAULT_CONFIG), [])
    torch.manual_seed(0)
    base = build_model(config).train()
    size, batch, frames = config.model.encoder.img_size, config.optim.batch_size, config.data.frames
    clips = torch.randint(0, 256, (batch, frames, 3, size, size), dtype=torch.uint8)
    variants = {"float32": (copy.deepcopy(base), False), "bf16 autocast": (copy.deepcopy(base), True)}
    if compile_model:
        variants["torch.compile, float32"] = (torch.compile(copy.deepcopy(base)), False)
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    first_loss: dict[str, float] = {}
    first_time: dict[str, float] = {}
    for i in range(repeats + 2):  # two warm-up rounds: allocators, and compilation for the compiled model
        for name, (model, bf16) in variants.items():
            generator = torch.Generator().manual_seed(i)
            torch.manual_seed(i)
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(clips, generator=generator)
            optimizers[name].zero_grad()
            out["loss"].backward()
            optimizers[name].step()
            elapsed = time.perf_counter() - start
            if i == 0:
                first_loss[name], first_time[name] = out["loss"].item(), elapsed
            if i >= 2:
                times[name].append(elapsed)
    return {name: (statistics.median(times[name]), first_loss[name], first_time[name]) for name in variants}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-sizes", action="store_true", help="only the mask and default-step comparisons")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the default-step table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_sizes:
        print(f"torch {torch.__version__}, {args.threads} threads, batch 8 clips x 8 frames, noisy latents, AdamW")
        print("| size | encoder | s / step (median) | clips / s |")
        print("|---|---|---|---|")
        for name, (overrides, batch, frames) in SIZES.items():
            for mode in ("frozen", "ema"):
                seconds = step_time(overrides, mode, batch, frames, args.repeats)
                print(f"| {name} | {mode} | {seconds:.3f} | {batch / seconds:.1f} |")
    print()
    print(f"default training step (configs/tiny.yaml model), torch {torch.__version__}, {args.threads} threads")
    print("| variant | s / step (median) | × float32 | first step (s; compiles) | loss of step 1 |")
    print("|---|---|---|---|---|")
    results = default_step_times(args.repeats, not args.no_compile)
    reference = results["float32"][0]
    for name, (seconds, loss, first) in results.items():
        print(f"| {name} | {seconds:.3f} | {seconds / reference:.2f} | {first:.1f} | {loss:.4f} |")
    cached, naive = mask_comparison(args.repeats * 4)
    print()
    print("| predictor forward (8 x 7 steps x 64 tokens) | ms (median) |")
    print("|---|---|")
    print(f"| cached frame-causal mask | {cached * 1000:.1f} |")
    print(f"| dense mask built per call | {naive * 1000:.1f} |")
    print(f"| ratio naive / cached | {naive / cached:.2f} |")


if __name__ == "__main__":
    main()
