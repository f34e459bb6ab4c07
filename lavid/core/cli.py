"""The command-line scaffold shared by the entry points: config file + overrides, logging, clean failures.

A script that loads a training config::

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ...  # its own options
    add_config_arguments(parser)
    args = parse_cli(parser, argv)                    # parsed, logging set up
    with clean_exit(DatasetFormatError, ...):         # ConfigError and these: one line on stderr, exit code 2
        config = load_config_from_args(args, TrainConfig)
        ...
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from lavid.core.config import ConfigError, load_config

T = TypeVar("T")

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "OpenGL", "OpenGL.acceleratesupport", "datasets", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(error: BaseException, code: int = 2) -> int:
    """Print ``error`` as one clear line on stderr (no traceback) and return the exit code."""
    print(f"error: {error}", file=sys.stderr)
    return code


def resolve_device(name: str) -> str:
    """A ``--device`` value -> a torch device string: ``auto`` is cuda when torch sees a GPU, else cpu. One that
    torch cannot use here (no such GPU, an unknown kind) is a ValueError naming it, before any work."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device ({error})") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s) here; "
                         "use --device cpu or auto")
    return str(device)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (default configs/tiny.yaml) and trailing ``key=value`` overrides of a training config."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default configs/tiny.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100 model.latent.beta=1e-3")


def parse_cli(parser: argparse.ArgumentParser, argv: list[str] | None = None, intermixed: bool = False
              ) -> argparse.Namespace:
    """Parse the command line (``intermixed``: ``key=value`` overrides may come between options); set up logging."""
    args = parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
    setup_logging()
    return args


def load_config_from_args(args: argparse.Namespace, schema: type[T]) -> T:
    """``schema`` from the ``--config`` file and ``key=value`` overrides of :func:`add_config_arguments`."""
    return load_config(schema, args.config, args.overrides)


@contextlib.contextmanager
def clean_exit(*errors: type[BaseException]) -> Iterator[None]:
    """A :class:`ConfigError` or one of ``errors`` raised inside ends the script: one line on stderr, exit code 2."""
    try:
        yield
    except (ConfigError, *errors) as error:
        raise SystemExit(fail(error)) from None
