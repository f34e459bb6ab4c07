"""Held-out probes from frame features to the simulator state: does the representation see the body?

    python evals/probe_state.py --checkpoint runs/tiny --out runs/tiny/state_probe
    python evals/probe_state.py --checkpoint runs/tiny --readouts linear,mlp --episodes 200 --out DIR
    python evals/probe_state.py --config configs/tiny.yaml data=data/jaco --out runs/probe-random-vit

With ``--checkpoint`` the run's own encoder is probed on the run's data and split; without it, the
encoder a ``--config`` (plus ``key=value`` overrides) would start training from (random, or its
``model.encoder.checkpoint``). Per task: R² of the pose (joint angles, orientations, positions) from one
step's features, and of the pose change from the feature change between two steps; fit on training
episodes, scored on held-out ones. ``--readouts`` picks the readouts: ``linear`` (ridge, the default) writes
state_probe.md and state_probe.json into --out, ``mlp`` (a small early-stopped MLP on the same episodes)
state_probe_mlp.md and state_probe_mlp.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lavid.core.cli import add_config_arguments, clean_exit, load_config_from_args, parse_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="a trained run folder (default: probe the config's encoder)")
    add_config_arguments(parser)
    parser.add_argument("--episodes", type=int, default=24, help="episodes per task and split (default 24)")
    parser.add_argument("--max-steps", type=int, default=100, help="steps read from each episode (default 100)")
    parser.add_argument("--readouts", default="linear",
                        help="comma-separated readouts: linear (ridge), mlp (default: linear)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    args = parse_cli(parser, argv)

    from lavid.data.clips import DatasetFormatError
    from lavid.metrics.state_probe import READOUTS, StateProbeError, format_table, model_episodes, probe_states
    from lavid.models.encoder import CheckpointError
    from lavid.training.runs import RunError, load_run
    from lavid.training.train_config import TrainConfig

    readouts = [r.strip() for r in args.readouts.split(",") if r.strip()]
    unknown = [r for r in readouts if r not in READOUTS]
    if not readouts or unknown:
        parser.error(f"--readouts takes a comma-separated subset of {', '.join(READOUTS)}, got {args.readouts!r}")
    if args.episodes < 1 or args.max_steps < 2:
        parser.error(f"--episodes must be >= 1 and --max-steps >= 2, got {args.episodes} and {args.max_steps}")
    with clean_exit(RunError, DatasetFormatError, CheckpointError, StateProbeError, ValueError):
        if args.checkpoint:
            loaded = load_run(args.checkpoint, args.device)
            model, config = loaded.model, loaded.config
        else:
            from accelerate.utils import set_seed

            from lavid.models.world_model import LatentActionWorldModel

            config = load_config_from_args(args, TrainConfig)
            set_seed(config.seed)  # the encoder lavid/train.py would start from
            model = LatentActionWorldModel(config.model).to(args.device)
        paths = [path for path, _ in config.data.sources()]
        for path in paths:
            if not Path(path).exists():
                raise DatasetFormatError(f"dataset {path} does not exist")
        episodes = model_episodes(model, paths, config.data.holdout_fraction, max_episodes=args.episodes,
                                  max_steps=args.max_steps, seed=config.seed)
        if not episodes:
            raise StateProbeError(f"no dataset of {config.data.data} stores simulator states to probe")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for readout in readouts:  # each written as soon as it is done
            result = probe_states(episodes, readout=readout, seed=config.seed)
            name = "state_probe" if readout == "linear" else f"state_probe_{readout}"
            table = format_table(result)
            (out / f"{name}.md").write_text(f"readout: {readout}\n\n{table}\n")
            (out / f"{name}.json").write_text(json.dumps({"readout": readout, "summary": result.summary(),
                                                          "state": result.state, "change": result.change,
                                                          "samples": result.samples}, indent=1))
            print(f"readout: {readout}\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
