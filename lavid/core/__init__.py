"""Shared helpers below every stage.

Takes in: YAML files, ``key=value`` overrides, command lines. Gives out: typed, validated configs
(:mod:`lavid.core.config`: nested dataclasses, errors that name the dotted key), the entry points'
logging and clean-failure helpers (:mod:`lavid.core.cli`) and where a run keeps its checkpoints
(:mod:`lavid.core.run_folders`). Imports nothing else of lavid; every stage may
import it. Light (no torch), so its exports are imported eagerly.
"""

from lavid.core.cli import (add_config_arguments, clean_exit, fail, load_config_from_args, parse_cli,
                            setup_logging)
from lavid.core.config import ConfigError, check, from_dict, load_config, to_dict

__all__ = ["ConfigError", "add_config_arguments", "check", "clean_exit", "fail", "from_dict", "load_config",
           "load_config_from_args", "parse_cli", "setup_logging", "to_dict"]
