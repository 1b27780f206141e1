"""Training recipes of the study's networks, by architecture key (:mod:`.base`).

``recipe_for(name)`` takes an architecture key (``"dcfb"``, ``"swinfuse"``, ``"matr"``,
``"dilran"``) or a method key of :mod:`fusion3d.methods` (``"dcfb3d"``, ``"dcfb2d"``, ...).
"""

from __future__ import annotations

from importlib import import_module

from fusion3d.learned.recipes.base import COMMON_DEFAULTS, RUN_CONTROL_KEYS, Recipe

__all__ = ["ARCHITECTURES", "COMMON_DEFAULTS", "RUN_CONTROL_KEYS", "Recipe", "recipe_for"]

#: Architecture key -> ``module:object`` of its recipe (imported on first use).
ARCHITECTURES: dict[str, str] = {
    "dcfb": "fusion3d.learned.recipes.dcfb:DCFB_RECIPE",
    "swinfuse": "fusion3d.learned.recipes.swinfuse:SWINFUSE_RECIPE",
    "matr": "fusion3d.learned.recipes.matr:MATR_RECIPE",
    "dilran": "fusion3d.learned.recipes.dilran:DILRAN_RECIPE",
}


def recipe_for(name: str) -> Recipe:
    """The recipe of an architecture key or of a network method key (ValueError otherwise)."""
    from fusion3d.methods import BY_NAME

    method = BY_NAME.get(name)
    arch = method.architecture if method is not None and method.architecture else name
    if arch not in ARCHITECTURES:
        known = sorted(set(ARCHITECTURES) | {m.name for m in BY_NAME.values() if m.architecture})
        raise ValueError(f"no training recipe for {name!r}; known: {known}")
    module, obj = ARCHITECTURES[arch].split(":")
    return getattr(import_module(module), obj)
