"""The scene-cut leakage test for one or more trained runs.

    python evals/leakage.py --checkpoint runs/noisy --checkpoint runs/discrete --clips 64 --out runs/leakage
    python evals/leakage.py --checkpoint runs/tiny --same-task --out runs/leakage-same-task

Clips whose second half comes from another video: the one-step error at the cut (IDM latents) vs the
error at the same step without a cut. A ratio near 1 means the latent carries the next frame (leakage);
the paper reports ×2.0–×2.5. With ``--same-task`` the second half comes from another episode of the same
simulator task: a cut to a scene of the kind the model was trained on. (A cut to another task is a jump
no training transition resembles, which an IDM cannot pass on whatever its capacity: every family then
scores far above ×2.5, the history-only model included.) Writes leakage.md and leakage.json into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lavid.core.cli import fail, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="run folder (repeatable)")
    parser.add_argument("--clips", type=int, default=64, help="held-out clips (default 64)")
    parser.add_argument("--cut", type=int, default=None, help="first step from the other video (default: middle)")
    parser.add_argument("--same-task", action="store_true", help="cut to another episode of the same task")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    setup_logging()

    from lavid.metrics import leakage
    from lavid.metrics.latent_evals import scene_pairs
    from lavid.models.latents import get_family
    from lavid.training.runs import RunError, load_run

    rows = []
    for path in args.checkpoint:
        try:
            loaded = load_run(path, args.device)
            states_a, targets_a, states_b, targets_b = scene_pairs(loaded.model, loaded.config.data, args.clips,
                                                                   seed=loaded.config.seed, same_task=args.same_task)
            cut = args.cut or states_a.shape[1] // 2
            errors = leakage.scene_cut_errors(loaded.model, states_a, targets_a, states_b, targets_b, cut)
        except (RunError, ValueError) as error:
            return fail(error)
        latent = loaded.config.model.latent
        capacity = get_family(latent.family).capacity(latent)  # the swept coefficient, as in run names
        rows.append({"run": str(loaded.run_dir), "family": latent.family, "capacity": capacity,
                     "cut": cut, "pairs": "same task" if args.same_task else "any other episode",
                     **leakage.summarize(errors)})
    lines = ["| run | family | capacity | error without cut | error at cut | ratio | copy at cut | at cut ÷ copy at cut |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['family']} | {r['capacity']} | {r['leak/error_no_cut']:.4f} | "
                     f"{r['leak/error_cut']:.4f} | {r['leak/ratio']:.2f} | {r['leak/copy_at_cut']:.4f} | "
                     f"{r['leak/cut_over_copy']:.3f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "leakage.md").write_text("\n".join(lines) + "\n")
    (out / "leakage.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
