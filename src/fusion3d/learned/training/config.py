"""Training step 1, resolve the configs: the recipe's published defaults, then the config's keys."""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os

from torch import nn

from fusion3d.learned.recipes import Recipe
from fusion3d.learned.recipes.dcfb import DCFB_RECIPE

log = logging.getLogger(__name__)


#: DC2Fusion's resolved defaults (every recipe has its own: ``recipe.all_defaults()``).
DEFAULT_TRAIN_CONFIG: dict = DCFB_RECIPE.all_defaults()

#: Common train-config switches that must be true or false.
BOOL_KEYS = ("augment", "cache", "compile", "channels_last", "fused_adam")

Item = tuple[str, str | os.PathLike, str | os.PathLike]


def resolve_train_config(
    train_config: dict | None, model_config: dict | None = None, recipe: Recipe | None = None
) -> dict:
    """The recipe's defaults (``recipe.all_defaults()``: the published settings) updated with
    ``train_config``, every key checked (ValueError names it). ``recipe``: DC2Fusion's by default.

    For DC2Fusion, ``rotation_interval`` ``None`` (default) follows the model config's
    ``variant``: ``"published"`` for ``variant: published``, else ``"symmetric"``.
    """
    recipe = recipe or DCFB_RECIPE
    cfg = copy.deepcopy(recipe.all_defaults())
    train_config = dict(train_config or {})
    unknown = sorted(set(train_config) - set(cfg))
    if unknown:
        raise ValueError(
            f"train_config: unknown key(s) {unknown} for {recipe.architecture}; allowed: {sorted(cfg)}"
        )
    cfg.update(copy.deepcopy(train_config))
    _check_common_keys(cfg)
    recipe.check_config(cfg, dict(model_config or {}))
    return cfg


def _check_common_keys(cfg: dict) -> None:
    """Check (and normalise in place) the keys every recipe has."""
    for key in ("epochs", "batch_size", "slices_per_volume", "val_every"):
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"train_config[{key!r}] must be a positive integer, got {v!r}")
    for key in BOOL_KEYS:
        if not isinstance(cfg[key], bool):
            raise ValueError(f"train_config[{key!r}] must be true or false, got {cfg[key]!r}")
    workers = cfg["num_workers"]
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"train_config['num_workers'] must be an integer >= 0, got {workers!r}")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise ValueError(f"train_config['seed'] must be an integer, got {cfg['seed']!r}")
    if not (isinstance(cfg["lr"], int | float) and math.isfinite(cfg["lr"]) and cfg["lr"] > 0):
        raise ValueError(f"train_config['lr'] must be a positive number, got {cfg['lr']!r}")
    if cfg["amp"] not in ("auto", "bf16", "off", True, False):
        raise ValueError(f"train_config['amp'] must be 'auto', 'bf16' or 'off', got {cfg['amp']!r}")
    if cfg["stop_after_epoch"] is not None and (
        not isinstance(cfg["stop_after_epoch"], int) or cfg["stop_after_epoch"] < 1
    ):
        raise ValueError(
            f"train_config['stop_after_epoch'] must be None or a positive integer, "
            f"got {cfg['stop_after_epoch']!r}"
        )
    cfg["lr"] = float(cfg["lr"])  # 1 and 1.0: one fingerprint


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
