"""Training-step time, memory and MFU of the world model on a CUDA GPU, float32 vs bf16 autocast.

For each size (a config file's model) the step is forward + backward + AdamW (fused) on random uint8
frames, or on cached features where the encoder is frozen (the path ``data_prep/encode.py`` offers):

- ``paper``: configs/paper.yaml's model (V-JEPA 2-L-sized frozen ViT-L at 256², tubelet 2, 16 frames =
  8 steps of 256 tokens; IDM 1024×4; predictor 1024×24; noisy latent 128) at its per-GPU batch 16,
  randomly initialised (no checkpoint is needed to time it);
- ``tiny``: configs/tiny.yaml's model (the default: conv encoder end to end with SIGReg, 64², 8 frames).

Floating-point operations of one step are counted by ``torch.utils.flop_counter.FlopCounterMode``
(matrix products, convolutions and attention, forward and backward; with ``model.predictor.attention=flex``
they are counted on the dense-mask path, the same arithmetic); MFU = those FLOPs / median step
time / the GPU's dense bf16 peak (``--peak-tflops``, default 989: H100 SXM and H200). A bf16 matrix
product of 8192³ is timed too: the ceiling this card reaches in practice. Each row also gives the first
step's loss, so float32 and bf16 can be compared on the same weights and batch, and fails loudly on a
non-finite loss.

Usage:
    python benchmarks/cuda_step.py [--sizes paper,tiny] [--repeats 10] [--out results.json]
    python benchmarks/cuda_step.py --device cpu --sizes tiny --repeats 1   # only checks that it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lavid.core.config import load_config
from lavid.models.encoder import normalize_frames
from lavid.training.train_config import TrainConfig, build_model

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"paper": (ROOT / "configs/paper.yaml", 16), "tiny": (ROOT / "configs/tiny.yaml", 16)}


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """Achieved bf16 TFLOP/s of an ``n³`` matrix product (median of ``repeats``, random data)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


def build(config_path: Path, device: torch.device, overrides: list[str] = ()):
    config = load_config(TrainConfig, config_path, ["model.encoder.checkpoint=null", *overrides])
    torch.manual_seed(0)
    model = build_model(config).to(device).train()
    return config, model


def measure(model, inputs: dict, precision: str, repeats: int, device: torch.device) -> dict:
    """Median step time, peak memory, FLOPs and the first loss of ``model(**inputs)`` + backward + AdamW."""
    params = [p for p in model.parameters() if p.requires_grad]
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=cuda)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> torch.Tensor:
        with autocast:
            loss = model(**inputs, generator=generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_ema()
        return loss.detach()

    state = {k: v.clone() for k, v in model.state_dict().items()}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    first_loss = float(step())
    if not torch.isfinite(torch.tensor(first_loss)):
        raise RuntimeError(f"non-finite loss {first_loss} in {precision}")
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if cuda else 0
    # FLOPs are counted on the dense-mask path: the same arithmetic as flex (the counter does not see inside a
    # compiled flex kernel), so MFU compares the two on one numerator
    predictor = model.predictor
    attention, predictor.config.attention, masks, predictor._masks = predictor.config.attention, "mask", \
        predictor._masks, {}
    with FlopCounterMode(display=False) as counter:
        step()
    predictor.config.attention, predictor._masks = attention, masks
    model.load_state_dict(state)  # the next variant starts from the same weights
    return {"s_per_step": statistics.median(times), "spread": (max(times) - min(times)) / statistics.median(times),
            "peak_gib": peak / 2**30, "tflop_per_step": counter.get_total_flops() / 1e12, "first_loss": first_loss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="paper,tiny", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=0, help="clips a step (0: the size's per-GPU batch)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only checks that the script runs")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--overrides", nargs="*", default=[],
                        help="config overrides of every size, e.g. model.predictor.checkpoint_activations=true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/cuda_step.py needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    unknown = set(args.sizes.split(",")) - set(SIZES)
    if unknown:
        parser.error(f"unknown --sizes {sorted(unknown)}; choose from {sorted(SIZES)}")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 rows are true float32
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    ceiling = matmul_tflops(device) if device.type == "cuda" else float("nan")
    print(f"{name}, torch {torch.__version__}; bf16 8192³ matmul: {ceiling:.0f} TFLOP/s", flush=True)
    rows = []
    for size in args.sizes.split(","):
        path, default_batch = SIZES[size]
        config, model = build(path, device, args.overrides)
        batch = args.batch or default_batch
        frames, px = config.data.frames, config.model.encoder.img_size
        clips = torch.randint(0, 256, (batch, frames, 3, px, px), dtype=torch.uint8, device=device)
        variants = [("frames", {"frames": clips})]
        if model.frozen:
            with torch.no_grad():
                variants.append(("features", {"features": model.encoder(normalize_frames(clips))}))
        for source, inputs in variants:
            for precision in args.precisions.split(","):
                label = f"{size} / {source} / {precision}"
                try:
                    row = measure(model, inputs, precision, args.repeats, device)
                except torch.OutOfMemoryError:
                    print(f"{label}: out of memory", flush=True)
                    model.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                    continue
                row.update(size=size, source=source, precision=precision, batch=batch,
                           mfu=row["tflop_per_step"] / row["s_per_step"] / args.peak_tflops,
                           clips_per_s=batch / row["s_per_step"])
                rows.append(row)
                print(f"{label}: {row['s_per_step'] * 1e3:.1f} ms/step, {row['clips_per_s']:.0f} clips/s, "
                      f"{row['tflop_per_step']:.2f} TFLOP/step, MFU {100 * row['mfu']:.1f} %, "
                      f"peak {row['peak_gib']:.1f} GiB, first loss {row['first_loss']:.5f}", flush=True)
        del model, variants, clips
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\n| size | input | precision | batch | ms / step | clips / s | TFLOP / step | MFU (÷ peak) | "
          "÷ measured matmul | peak GiB | first loss |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['source']} | {r['precision']} | {r['batch']} | {r['s_per_step'] * 1e3:.1f} | "
              f"{r['clips_per_s']:.0f} | {r['tflop_per_step']:.2f} | {100 * r['mfu']:.1f} % | "
              f"{100 * r['mfu'] * args.peak_tflops / ceiling:.1f} % | {r['peak_gib']:.1f} | {r['first_loss']:.5f} |")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "matmul_tflops": ceiling,
                                        "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
