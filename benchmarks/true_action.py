"""Does the action show? The default run beside its history-only and true-action twins, on held-out clips.

    python benchmarks/true_action.py                       # the default config and data, its budget
    python benchmarks/true_action.py --set model.encoder.arch=vit model.encoder.mode=ema model.loss=l1

Trains ``lavid/train.py`` three times from the same seed with the same data, encoder and budget:
``deterministic`` (the latent family that sees history only), ``action`` (``model.condition=action``:
the true actions of each step) and the config's own latent family. For each it reads the last held-out
evaluation: one-step error ÷ copy error (target vs target; below 1 predicts motion), the condition gain
(error with conditions rolled across the batch ÷ with its own; above 1 means the condition is used), and
the state probe of the trained encoder. The issue's figures: action ratio at most 0.9 × the
deterministic ratio, and action gain at least 1.1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "deterministic": ["model.condition=latent", "model.latent.family=deterministic"],
    "action": ["model.condition=action"],
    "latent (config's family)": ["model.condition=latent"],
}


def last_eval(run: Path) -> dict[str, float]:
    """The last ``eval/...`` record of a run's metrics.jsonl, merged with its ``probe/...`` record."""
    out: dict[str, float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval/ratio" in record or any(k.startswith("probe/") for k in record):
            out.update(record)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="a config file (default: the embedded default)")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for all three runs")
    parser.add_argument("--out", default="runs/true_action", help="folder for the three runs")
    parser.add_argument("--json", default=None, help="append one JSON line per run here")
    args = parser.parse_args(argv)
    rows = []
    for name, overrides in VARIANTS.items():
        run = Path(args.out) / name.split()[0]
        command = [sys.executable, "-m", "accelerate.commands.launch", str(ROOT / "lavid" / "train.py"),
                   *(["--config", args.config] if args.config else []), *args.set, *overrides,
                   f"out_dir={run}", "progress=false"]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout[-2000:], result.stderr[-4000:], file=sys.stderr)
            return result.returncode
        metrics = last_eval(run)
        row = {"variant": name, "overrides": [*args.set, *overrides], "wall_s": time.perf_counter() - started,
               **{k: v for k, v in metrics.items() if k.startswith(("eval/", "probe/"))}}
        rows.append(row)
        print(f"{name}: ratio {row['eval/ratio']:.3f}, gain {row['eval/latent_gain']:.3f} "
              f"({row['wall_s']:.0f} s)", flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    probes = sorted(k for k in rows[0] if k.startswith("probe/state/"))
    print("\n| model | held-out one-step ÷ copy | condition gain (rolled ÷ own) | "
          + " | ".join(f"probe R² {k.split('/')[-1]}" for k in probes) + " | wall |")
    print("|---|---|---|" + "---|" * len(probes) + "---|")
    for row in rows:
        print(f"| {row['variant']} | {row['eval/ratio']:.3f} | {row['eval/latent_gain']:.3f} | "
              + " | ".join(f"{row.get(k, float('nan')):.2f}" for k in probes) + f" | {row['wall_s']:.0f} s |")
    deterministic, action = rows[0], rows[1]
    print(f"\naction ratio ÷ deterministic ratio: {action['eval/ratio'] / deterministic['eval/ratio']:.3f} "
          f"(figure: <= 0.9); action gain {action['eval/latent_gain']:.3f} (figure: >= 1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
