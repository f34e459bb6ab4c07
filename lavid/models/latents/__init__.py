"""Latent-action families: how the IDM's raw output becomes the latent action z, and its regularizer.

Every family has one interface::

    z, loss, stats = family(raw)        # raw: [..., raw_dim] from the IDM; z: [..., dim]

``loss`` is the regularizer L_z (a scalar), ``stats`` a dict of detached scalars for logging.
``family.sample(shape, generator)`` draws latents without an IDM where the family allows it.

Families, one module each: ``noisy`` (VAE-like), ``sparse`` (energy-based), ``discrete`` (VQ-VAE), ``fsq``
(finite scalar quantization), ``none`` (unconstrained) and ``deterministic`` (no latent at all). Each module
registers a :class:`FamilySpec` (:mod:`lavid.models.latents.registry`); importing this package imports every
module in it, so adding a family is adding one module (and its ``configs/<family>.yaml`` and tests).

:data:`LatentConfig` (``model.latent``) is composed from the registered families: the shared ``family`` and
``dim``, then each family's own coefficients as flat keys (``model.latent.beta``, ``model.latent.l1``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lavid.models.latents.base import LatentFamily
from lavid.models.latents.registry import (
    FamilyConfig,
    FamilySpec,
    compose_config,
    discover,
    families,
    format_value,
    get_family,
    names,
    parse_levels,
    register,
    unregister,
)

discover(__name__, __path__)

from lavid.models.latents.deterministic import Deterministic  # noqa: E402  (after discover: re-exports)
from lavid.models.latents.discrete import Discrete, DiscreteConfig  # noqa: E402
from lavid.models.latents.fsq import FSQ, FSQConfig  # noqa: E402
from lavid.models.latents.noisy import Noisy, NoisyConfig  # noqa: E402
from lavid.models.latents.none import Unconstrained  # noqa: E402
from lavid.models.latents.sparse import Sparse, SparseConfig  # noqa: E402

if TYPE_CHECKING:  # what type checkers see; at run time the class also holds any family added later

    class LatentConfig(NoisyConfig, SparseConfig, DiscreteConfig, FSQConfig):
        pass

else:
    LatentConfig = compose_config(__name__)

FAMILIES = tuple(names())
"""The registered families' names, in the default order."""


def make_family(config: LatentConfig) -> LatentFamily:
    """The family module ``config.family`` names, built from the flat latent config."""
    return get_family(config.family).cls(config)


__all__ = [
    "FAMILIES", "FSQ", "Deterministic", "Discrete", "DiscreteConfig", "FSQConfig", "FamilyConfig", "FamilySpec",
    "LatentConfig", "LatentFamily", "Noisy", "NoisyConfig", "Sparse", "SparseConfig", "Unconstrained",
    "compose_config", "discover", "families", "format_value", "get_family", "make_family", "names",
    "parse_levels", "register", "unregister",
]
