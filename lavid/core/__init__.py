"""Shared utilities below every stage: typed configs (dataclasses from YAML with ``key=value`` overrides and
key-naming errors: :mod:`lavid.core.config`) and the command-line helpers of the entry points
(:mod:`lavid.core.cli`). Takes in nothing from the rest of lavid; every stage may import it."""
