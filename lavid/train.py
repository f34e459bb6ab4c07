"""Train a latent-action world model.

    accelerate launch lavid/train.py [--config configs/tiny.yaml] [key=value ...]
    python lavid/train.py steps=200 out_dir=runs/try model.latent.family=sparse

With no arguments it trains the tiny model on the embedded default data (built on first use).
Unknown keys and impossible values stop before any work, naming the key.
"""

from __future__ import annotations

import argparse
import sys

from lavid.core.cli import add_config_arguments, clean_exit, load_config_from_args, parse_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    args = parse_cli(parser, argv)

    from lavid.data.clips import DatasetFormatError
    from lavid.metrics.training_probes import probe_after_training
    from lavid.models.encoder import CheckpointError
    from lavid.training.checkpoint import CheckpointMissing
    from lavid.training.evaluation import condition_verdict
    from lavid.training.train_config import TrainConfig
    from lavid.training.trainer import RunExists, train

    with clean_exit(CheckpointMissing, RunExists, DatasetFormatError, CheckpointError, ValueError):
        config = load_config_from_args(args, TrainConfig)
        summary = train(config, after_training=probe_after_training)
    from accelerate import PartialState

    if PartialState().is_main_process:
        metrics = summary["metrics"]
        out = summary["out_dir"]
        print(f"done: {summary['step']} steps on {summary['processes']} process(es); "
              f"final loss {metrics.get('loss', float('nan')):.4f}"
              + (f", held-out one-step error {metrics['eval/one_step']:.4f} (copy baseline "
                 f"{metrics['eval/copy']:.4f})" if "eval/one_step" in metrics else ""))
        verdict = condition_verdict(metrics, summary["condition"])
        if verdict:
            print(verdict)
        probes = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("probe/state/")}
        if probes:
            print("state probe, held-out R² of the pose from the trained encoder's features: "
                  + ", ".join(f"{task} {r2:.2f}" for task, r2 in probes.items()) + f" ({out}/state_probe.md)")
        actions = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("probe/action_z/")}
        if actions:
            def value(kind: str, task: str) -> str:
                number = metrics.get(f"probe/action_{kind}/{task}")
                return "–" if number is None else f"{number:.2f}"

            print("action probe, held-out R² of the true action from z, linear [its ceiling from the true poses] / "
                  "MLP [its ceiling] (linear from the feature change): "
                  + ", ".join(f"{task} {value('z', task)} [{value('ceiling', task)}] / {value('z_mlp', task)} "
                              f"[{value('ceiling_mlp', task)}] ({value('change', task)})" for task in actions)
                  + f" ({out}/action_probe.md)")
        print(f"results in {out}/: metrics.jsonl, config.yaml, checkpoints/ (latest: {summary['checkpoint']}), "
              f"rollouts/*.png|gif, tensorboard/ (tensorboard --logdir {out}/tensorboard)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
