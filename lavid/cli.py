"""Small helpers shared by the command-line entry points: logging set-up and clean failures."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "OpenGL", "OpenGL.acceleratesupport", "datasets", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(error: BaseException, code: int = 2) -> int:
    """Print ``error`` as one clear line on stderr (no traceback) and return the exit code."""
    print(f"error: {error}", file=sys.stderr)
    return code
