"""Which encoder should the tiny scale use? Train the same world model with each and compare.

Variants: a frozen random ViT, an EMA-finetuned ViT from random init (the first default), a frozen
MAE-pretrained ViT (data_prep/pretrain_encoder.py), and an EMA-finetuned one from the MAE weights.
Each trains for --steps on data/mix with the same seed; we report held-out one-step error with IDM
latents, the copy-last-step baseline on the same features, and their ratio (below 1 means the model
predicts better than "nothing moves"; with a finetuned encoder both numbers move with the features,
so the ratio is the comparable figure).

Usage:
    python benchmarks/encoder_choice.py --mae checkpoints/mae_tiny.pth [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mae", required=True, help="MAE-pretrained encoder (data_prep/pretrain_encoder.py)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--data", default="data/mix")
    args = parser.parse_args()
    variants = {
        "frozen random": ["model.encoder.mode=frozen"],
        "EMA from random": ["model.encoder.mode=ema"],
        "frozen MAE": ["model.encoder.mode=frozen", f"model.encoder.checkpoint={args.mae}"],
        "EMA from MAE": ["model.encoder.mode=ema", f"model.encoder.checkpoint={args.mae}"],
    }
    work = Path(tempfile.mkdtemp(prefix="lavid-encoders-"))
    print(f"| encoder | one-step error | copy baseline | ratio | rollout mean | KL (noisy) |")
    print("|---|---|---|---|---|---|")
    try:
        for name, overrides in variants.items():
            out = work / name.replace(" ", "_")
            subprocess.run([sys.executable, str(ROOT / "lavid" / "train.py"), f"data.data={args.data}",
                            f"steps={args.steps}", f"eval_every={args.steps}", "checkpoint_every=0", "progress=false",
                            "eval_batches=8", f"out_dir={out}", *overrides], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
            final = [r for r in rows if "eval/one_step" in r][-1]
            kl = [r for r in rows if "latent/kl" in r][-1]["latent/kl"]
            print(f"| {name} | {final['eval/one_step']:.4f} | {final['eval/copy']:.4f} | "
                  f"{final['eval/one_step'] / final['eval/copy']:.3f} | {final['eval/rollout_mean']:.4f} | {kl:.2f} |",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
