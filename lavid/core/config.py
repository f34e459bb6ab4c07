"""Typed configs: nested dataclasses as OmegaConf structured configs, from YAML with ``key=value`` overrides.

The dataclasses are the schema. OmegaConf reads the YAML, resolves ``base: other.yaml`` (relative to the
file that names it), merges defaults <- file <- overrides and checks keys and types (``Literal`` choices
included); every one of its errors becomes a :class:`ConfigError` that names the dotted key
(``model.latent.beta``). Values that have the right type but are impossible are checked by each
dataclass's own ``validate(prefix)``. A section may name one field as its ``SHORTHAND``:
``section=value`` then sets that field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown or its value is impossible. The message names the key."""


def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def _config_error(error: OmegaConfBaseException, schema: DictConfig, prefix: str = "", key: str = "") -> ConfigError:
    """OmegaConf's error as a one-line :class:`ConfigError` naming the dotted key (``key`` when it names none)."""
    full_key = str(getattr(error, "full_key", None) or key)
    message = str(error).split("\n")[0].strip() or type(error).__name__
    if isinstance(error, ConfigKeyError) and full_key:
        parent = OmegaConf.select(schema, full_key.rpartition(".")[0]) if "." in full_key else schema
        valid = f"; valid keys here: {', '.join(sorted(parent))}" if isinstance(parent, DictConfig) else ""
        return ConfigError(f"unknown config key {_join(prefix, full_key)!r}{valid}")
    return ConfigError(f"{_join(prefix, full_key) or 'config'}: {message}")


def _validate(config: Any, prefix: str = "") -> None:
    """Each nested dataclass's ``validate(prefix)``, innermost first."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            _validate(value, _join(prefix, f.name))
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate(prefix)


def _build(schema: DictConfig, parts: list[tuple[str, Any]], prefix: str = "") -> Any:
    """Merge ``parts`` (``(key it is blamed on, mapping)``) in order into ``schema`` (a dataclass's defaults);
    the validated dataclass."""
    try:
        config = OmegaConf.to_object(OmegaConf.merge(schema, *[part for _, part in parts]))
    except OmegaConfBaseException as error:
        if not getattr(error, "full_key", None):  # a section given a value: find the part to blame
            for key, part in parts:
                try:
                    OmegaConf.merge(schema, part)
                except OmegaConfBaseException as culprit:
                    raise _config_error(culprit, schema, prefix, key) from None
        raise _config_error(error, schema, prefix) from None
    _validate(config, prefix)
    return config


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are errors naming the dotted key."""
    return _build(OmegaConf.structured(cls), [(name, {name: value}) for name, value in data.items()], prefix)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict (tuples as lists), for YAML dumps and checkpoints."""
    return OmegaConf.to_container(OmegaConf.structured(config))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; ``base: other.yaml`` (relative to this file) is loaded first and updated."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = OmegaConf.load(path)
    except Exception as error:  # yaml's and OmegaConf's parse errors
        first = str(error).split("\n")[0]
        raise ConfigError(f"config file {path} is not valid YAML: {first}") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("base", None)
    if base:
        data = OmegaConf.merge(load_yaml(path.parent / base), data)
    return OmegaConf.to_container(data)


def _is_text_field(schema: DictConfig, key: str) -> bool:
    """Whether dotted ``key`` of ``schema`` is declared ``str``, ``str | None`` or a ``Literal`` of strings."""
    parent, _, leaf = key.rpartition(".")
    section = OmegaConf.select(schema, parent, default=None) if parent else schema
    if not isinstance(section, DictConfig) or not dataclasses.is_dataclass(OmegaConf.get_type(section)):
        return False
    hint = typing.get_type_hints(OmegaConf.get_type(section)).get(leaf)
    options = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]
    return all(a is str or (typing.get_origin(a) is typing.Literal and all(isinstance(v, str) for v in typing.get_args(a)))
               for a in options) and bool(options)


def _override(schema: DictConfig, text: str) -> tuple[str, dict[str, Any]]:
    """``"model.latent.beta=1e-3"`` -> ``("model.latent.beta", {"model": {"latent": {"beta": 0.001}}})``.

    ``section=value`` of a section with a ``SHORTHAND`` field sets that field.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"override {text!r} must look like key=value")
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={raw}" if raw.strip() else "v=''"]))["v"]
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {' '.join(str(error).split())}") from None
    section = OmegaConf.select(schema, key, default=None)
    if isinstance(section, DictConfig) and not isinstance(value, dict):
        shorthand = getattr(OmegaConf.get_type(section), "SHORTHAND", None)
        if shorthand:
            key = f"{key}.{shorthand}"
    if isinstance(value, (bool, int, float)) and _is_text_field(schema, key):
        value = raw.strip()  # YAML reads no, on, 1e-3 ... as bool or number; a text field keeps the text
    nested: Any = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return key, nested


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Load ``cls`` from a YAML file (optional) updated with ``key=value`` overrides."""
    schema = OmegaConf.structured(cls)
    parts = [(name, {name: value}) for name, value in (load_yaml(path) if path else {}).items()]
    return _build(schema, parts + [_override(schema, text) for text in overrides])
