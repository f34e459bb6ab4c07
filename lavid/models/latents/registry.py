"""The latent-family registry: one :class:`FamilySpec` per family, registered by the family's own module.

A family module (``lavid/models/latents/<family>.py``) defines its config dataclass (its coefficients and
their defaults, a subclass of :class:`FamilyConfig`), its :class:`~lavid.models.latents.base.LatentFamily`
subclass and calls :func:`register` once. :func:`discover` imports every module of the package, so a new
family needs no edit anywhere else: :func:`compose_config` folds every registered family's fields into the
one flat ``model.latent`` config, and the sweep planner, the report and the evals read names, swept
coefficients, run names, labels and the paper's sweep values from here.

This module does not import torch.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lavid.core.config import check

if TYPE_CHECKING:
    from lavid.models.latents.base import LatentFamily

_REGISTRY: dict[str, FamilySpec] = {}
_NOT_FAMILIES = {"base", "registry"}
"""Modules of the package that hold no family."""


@dataclass
class FamilyConfig:
    """The fields every family shares; each family's config subclasses it and adds its own coefficients.

    Attributes:
        family: a registered family's name (``noisy, sparse, discrete, fsq, none, deterministic`` and any
            module added to ``lavid/models/latents/``).
        dim: latent dimension D (128 in the reference paper).
    """

    family: str = "noisy"
    dim: int = 128

    def validate(self, prefix: str = "") -> None:
        """Checks the shared fields; ``prefix`` is the dotted key of this section (``model.latent``)."""
        key = (prefix + ".") if prefix else ""
        check(self.family in _REGISTRY, f"{key}family",
              f"unknown latent family {self.family!r}; choose from {', '.join(names())}")
        check(self.dim >= 1, f"{key}dim", f"must be >= 1, got {self.dim}")


def format_value(value: Any) -> str:
    """A coefficient as written in run names: ``[8, 5]`` -> ``8x5``, ``1e-05`` -> ``1e-05``, ``16`` -> ``16``."""
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_levels(text: str) -> list[int]:
    """FSQ levels as written in run names and on the command line: ``"8x5x5"`` -> ``[8, 5, 5]``."""
    return [int(level) for level in text.split("x")]


@dataclass(frozen=True)
class FamilySpec:
    """One latent family: how to build it, what its config holds and how the capacity sweep treats it.

    Attributes:
        name: the value of ``model.latent.family``.
        cls: the family's module class, built as ``cls(config)`` from the flat latent config.
        config: its config dataclass: :class:`FamilyConfig` plus the family's own coefficients (their defaults
            are the defaults of ``model.latent.<field>``); :class:`FamilyConfig` itself for a family without
            coefficients. Its own ``validate(prefix)`` checks only its own fields.
        coefficient: the field the ablation sweeps (``None``: a baseline, trained once).
        short: the coefficient's name in run names (``noisy-beta_0.001``); defaults to ``coefficient``.
        label: a human label for tables and plots; defaults to ``name``.
        coefficient_label: the swept coefficient's human label (plot axes); defaults to ``coefficient``.
        paper_values: the reference paper's sweep, the default when a budget names no values for the family.
        parse: reads one coefficient value from text (``"1e-3"``, ``"16"``, ``"8x5"``).
        order: position in the default family order (tables, plots and the sweep); ties by name.
    """

    name: str
    cls: type[LatentFamily]
    config: type = FamilyConfig
    coefficient: str | None = None
    short: str | None = None
    label: str = ""
    coefficient_label: str | None = None
    paper_values: tuple = ()
    parse: Callable[[str], Any] = float
    order: int = 100

    def __post_init__(self) -> None:
        for name, default in (("short", self.coefficient), ("label", self.name),
                              ("coefficient_label", self.coefficient)):
            if not getattr(self, name):
                object.__setattr__(self, name, default)

    def own_fields(self) -> list[dataclasses.Field]:
        """The config fields this family adds to :class:`FamilyConfig`."""
        shared = {f.name for f in dataclasses.fields(FamilyConfig)}
        return [f for f in dataclasses.fields(self.config) if f.name not in shared]

    def default_values(self) -> list:
        """A fresh copy of the paper's sweep values."""
        return copy.deepcopy(list(self.paper_values))

    def run_name(self, value: Any = None) -> str:
        """``noisy-beta_0.001`` for a swept run, the family's name for a baseline."""
        if self.coefficient is None:
            return self.name
        return f"{self.name}-{self.short}_{format_value(value)}"

    def parse_values(self, text: str) -> list:
        """Comma-separated values (``"1e-3,1e-4"``, ``"16,1024"``, ``"8x5,8x5x5x5"``) -> a list of values."""
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return [self.parse(item) for item in items]
        except ValueError as error:
            raise ValueError(f"cannot read the values {text!r} for {self.name}: {error}") from error

    def capacity(self, config: Any) -> str:
        """The swept coefficient of a latent ``config`` as ``short=value`` (``beta=0.001``); ``–`` for a baseline."""
        if self.coefficient is None:
            return "–"
        return f"{self.short}={format_value(getattr(config, self.coefficient))}"


def register(spec: FamilySpec) -> FamilySpec:
    """Add a family; called once by its module. Returns ``spec``.

    Args:
        spec: the family. Its name must be new and its config a dataclass subclassing :class:`FamilyConfig`
            with a default for every field, whose swept ``coefficient`` is one of its fields.

    Raises:
        ValueError: a family of that name is already registered, or the spec is inconsistent.
    """
    if spec.name in _REGISTRY:
        raise ValueError(f"latent family {spec.name!r} is registered twice ({_REGISTRY[spec.name].cls.__module__} "
                         f"and {spec.cls.__module__})")
    if not (dataclasses.is_dataclass(spec.config) and issubclass(spec.config, FamilyConfig)):
        raise ValueError(f"latent family {spec.name!r}: config must be a dataclass subclassing FamilyConfig")
    fields = {f.name for f in spec.own_fields()}
    if spec.coefficient is not None and spec.coefficient not in fields:
        raise ValueError(f"latent family {spec.name!r}: the swept coefficient {spec.coefficient!r} is not one of "
                         f"its config fields {sorted(fields)}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a family (tests that register a temporary one)."""
    _REGISTRY.pop(name, None)


def families() -> list[FamilySpec]:
    """Every registered family, in the default order (swept families first, then the baselines)."""
    return sorted(_REGISTRY.values(), key=lambda spec: (spec.order, spec.name))


def names() -> list[str]:
    return [spec.name for spec in families()]


def get_family(name: str) -> FamilySpec:
    """The family called ``name``.

    Raises:
        ValueError: no such family (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown latent family {name!r}; choose from {', '.join(names())}")
    return _REGISTRY[name]


def discover(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its ``__path__``) but ``base`` and ``registry``; each registers its
    family on import. Modules whose name starts with ``_`` are skipped."""
    for module in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if not module.name.startswith("_") and module.name not in _NOT_FAMILIES:
            importlib.import_module(f"{package}.{module.name}")


def compose_config(module: str = __name__) -> type:
    """The flat latent config: :class:`FamilyConfig`'s fields, then every registered family's own fields.

    The class subclasses every family's config (so ``isinstance(config, NoisyConfig)`` holds and each family
    reads its own fields from it), keeps the flat keys (``model.latent.beta``) and validates the shared fields,
    then each family's own.

    Args:
        module: the module the class is said to live in (pickling and error messages).

    Raises:
        TypeError: two families declare the same field.
    """
    configs: list[type] = []
    owner: dict[str, str] = {f.name: "every family" for f in dataclasses.fields(FamilyConfig)}
    for spec in families():
        if spec.config is FamilyConfig or spec.config in configs:
            continue
        for f in spec.own_fields():
            if f.name in owner:
                raise TypeError(f"latent families {owner[f.name]!r} and {spec.name!r} both declare the config "
                                f"field {f.name!r}")
            owner[f.name] = spec.name
        configs.append(spec.config)

    def validate(self: Any, prefix: str = "") -> None:
        FamilyConfig.validate(self, prefix)
        for config in configs:
            own = vars(config).get("validate")
            if own is not None:
                own(self, prefix)

    # the dataclass collects fields from the last base to the first: reversed, the first family's come first
    cls = dataclasses.make_dataclass("LatentConfig", [], bases=tuple(reversed(configs)) or (FamilyConfig,),
                                     namespace={"validate": validate})
    cls.__module__ = module
    own = "; ".join(f"{', '.join(f.name for f in spec.own_fields())} ({spec.name})" for spec in families()
                    if spec.config is not FamilyConfig)
    cls.__doc__ = ("The latent-action family (``family``), the latent size (``dim``) and every registered "
                   f"family's coefficients as flat keys: {own}.")
    return cls
