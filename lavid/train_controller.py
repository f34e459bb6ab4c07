"""Fit the controller that maps real actions into a trained latent-action world model's latent space.

    python lavid/train_controller.py run=runs/tiny out_dir=runs/tiny/controller [labeled_fraction=0.1] [key=value ...]

Only ``labeled_fraction`` of the run's training episodes lend their actions; the held-out episodes
score it (latent R², one-step and rollout error next to the IDM's latents). Prints the summary and
writes ``controller.safetensors``, ``controller.yaml`` and ``metrics.json`` into ``out_dir``.
"""

from __future__ import annotations

import argparse
import sys

from lavid.core.cli import clean_exit, parse_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML file of ControllerTrainConfig fields (optional)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. run=runs/tiny labeled_fraction=0.05")
    args = parse_cli(parser, argv)

    from lavid.planning.fit_controller import ControllerTrainConfig, train_controller
    from lavid.core.config import load_config
    from lavid.core.threads import usable_cores
    from lavid.data.clips import DatasetFormatError
    from lavid.training.runs import RunError

    import torch

    torch.set_num_threads(usable_cores())
    with clean_exit(RunError, DatasetFormatError, FileNotFoundError, ValueError):
        config = load_config(ControllerTrainConfig, args.config, args.overrides)
        summary = train_controller(config, "cuda" if torch.cuda.is_available() else "cpu")
    print(f"controller on {summary['labeled_transitions']} labeled transitions ({summary['labeled_episodes']} "
          f"episodes; the run's training split has {summary['training_transitions']}): held-out latent R² "
          f"{summary['latent_r2']:.2f}; one-step error ÷ IDM latents {summary['one_step_ratio']:.3f}; rollout of "
          f"{config.eval_frames - 1} steps ÷ IDM latents {summary['rollout_ratio']:.3f} (÷ copy "
          f"{summary['rollout_vs_copy']:.3f}); action gain (rolled ÷ own actions) {summary['action_gain']:.3f}")
    print(f"saved in {summary['out_dir']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
