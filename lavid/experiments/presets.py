"""Budgets and presets of the sweeps as typed configs in YAML: ``configs/experiments/<sweep>/<name>.yaml``.

A preset is loaded into the sweep's dataclass by the project's config loader
(:func:`lavid.core.config.load_config`), so an unknown key or an impossible value stops before any work,
naming the key and the file. ``name`` may also be a path to a YAML file of one's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from lavid.core.config import ConfigError, load_config

T = TypeVar("T")

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "experiments"


def preset_names(sweep: str) -> list[str]:
    """The presets shipped for ``sweep`` (file stems under ``configs/experiments/<sweep>/``)."""
    return sorted(path.stem for path in (PRESETS / sweep).glob("*.yaml"))


def preset_path(sweep: str, name: str) -> Path:
    """``name``'s YAML: a shipped preset of ``sweep``, or a path to a file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    path = PRESETS / sweep / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"no {sweep} preset {name!r}; choose from {', '.join(preset_names(sweep))} or give a "
                          f"YAML file")
    return path


def load_preset(cls: type[T], sweep: str, name: str, overrides: list[str] = ()) -> T:
    """Load preset ``name`` of ``sweep`` into dataclass ``cls``, updated with ``key=value`` overrides."""
    path = preset_path(sweep, name)
    try:
        return load_config(cls, path, list(overrides))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
