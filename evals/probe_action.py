"""Is the latent the action? Held-out linear and MLP probes from a trained run's latents to the true actions.

    python evals/probe_action.py --checkpoint runs/tiny --out runs/tiny/action_probe

Per task (action spaces differ between tasks): a ridge regression (strength by cross-validation) and a
small MLP (early-stopped, seeded) from each transition's IDM latent z to the true actions of that step,
fit on training clips and scored by R² on held-out clips of the run's own split. Each is shown next to
its ceiling: the same probe from the true poses at t and t+1 of the same transitions (where the data
stores simulator states; a linear readout of two poses explains only about 0.3 of the DMControl
actions, a small MLP about 0.5). Beside them, the ridge probe from the run's own feature change
``s_t+1 − s_t``: what the frames show of the action at all, as the model's features see it. And, where
states are stored, MLP probes from the true pose at t alone and beside z: an IDM may code what the action
did, which is the action only given the state. Writes action_probe.md and action_probe.json into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lavid.core.cli import fail, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a trained run folder with a latent family")
    parser.add_argument("--train-clips", type=int, default=3000, help="training clips the probes are fit on (default 3000)")
    parser.add_argument("--clips", type=int, default=1000, help="held-out clips scored (default 1000)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    setup_logging()

    from lavid.data.clips import DatasetFormatError
    from lavid.metrics.latent_evals import action_probe, format_action_probe
    from lavid.training.runs import RunError, load_run

    try:
        loaded = load_run(args.checkpoint, args.device)
        if loaded.model.action_conditioned or loaded.model.idm is None:
            raise RunError(f"{args.checkpoint} has no inferred latent to probe (condition=action, or a family "
                           "without an IDM)")
        result = action_probe(loaded.model, loaded.config.data, args.train_clips, args.clips, loaded.config.seed)
        if not result:
            raise DatasetFormatError(f"the data of {args.checkpoint} has no clips with actions on both sides of its split")
    except (RunError, DatasetFormatError, ValueError) as error:
        return fail(error)
    table = format_action_probe(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "action_probe.md").write_text(table + "\n")
    (out / "action_probe.json").write_text(json.dumps(result, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
