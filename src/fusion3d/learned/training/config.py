"""Training step 1, resolve the configs: the recipe's published defaults, then the config's keys.

:func:`resolve_train_config` and the checks live in :mod:`fusion3d.learned.settings` (no
torch: the driver checks every network's train config with it before any job runs).
"""

from __future__ import annotations

import inspect
import logging
import os

from torch import nn

from fusion3d.learned.recipes.dcfb import DCFB_RECIPE
from fusion3d.learned.settings import BOOL_KEYS, resolve_train_config

__all__ = [
    "BOOL_KEYS",
    "DEFAULT_TRAIN_CONFIG",
    "Item",
    "model_init_args",
    "plain",
    "resolve_train_config",
]

log = logging.getLogger(__name__)


#: DC2Fusion's resolved defaults (every recipe has its own: ``recipe.all_defaults()``).
DEFAULT_TRAIN_CONFIG: dict = DCFB_RECIPE.all_defaults()

Item = tuple[str, str | os.PathLike, str | os.PathLike]


def plain(value):
    """Tuples and lists as lists, recursively (primitive, comparable, weights_only-safe)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def model_init_args(model: nn.Module, model_config: dict) -> dict:
    """The fully resolved constructor arguments of ``model`` (plain values).

    The model's own ``init_args`` when it records them; else ``model_config`` completed
    with the defaults of the model class's signature, so a later change of a default
    cannot change what a checkpoint rebuilds.
    """
    recorded = getattr(model, "init_args", None)
    if recorded:
        return plain(dict(recorded))
    signature = inspect.signature(type(model).__init__)
    resolved = {
        name: p.default
        for name, p in signature.parameters.items()
        if name != "self" and p.default is not inspect.Parameter.empty
    }
    resolved.update(model_config)
    return plain(resolved)
