"""Small helpers shared by the command-line entry points: logging set-up and clean failures."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "OpenGL", "OpenGL.acceleratesupport", "datasets", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(error: BaseException, code: int = 2) -> int:
    """Print ``error`` as one clear line on stderr (no traceback) and return the exit code."""
    print(f"error: {error}", file=sys.stderr)
    return code


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (default configs/tiny.yaml) and trailing ``key=value`` overrides of a training config."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default configs/tiny.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100 model.latent.beta=1e-3")
