"""Published weights as our checkpoints: ``fusion3d import-weights --method M PUBLISHED OUT``.

Each architecture's recipe converts a state_dict saved by its published code
(:meth:`fusion3d.learned.recipes.Recipe.convert_published`: the documented key map, sizes
read from the weights, every missing, unexpected or mis-shaped key named). The result is a
self-describing checkpoint that :func:`fusion3d.learned.inference.load_model` and
``fusion3d fuse`` read: ``{"method", "init_args", "model_state", "variant": "published",
"source"}``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from fusion3d.io import atomic_path

__all__ = ["IMPORT_METHODS", "import_weights", "read_published_state"]

log = logging.getLogger(__name__)

#: ``--method`` of import-weights -> architecture key of the recipe.
IMPORT_METHODS: dict[str, str] = {
    "dc2fusion": "dcfb",
    "swinfuse": "swinfuse",
    "matr": "matr",
    "dilran": "dilran",
}

_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "model_state")


def read_published_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a published state_dict safely (``weights_only=True``).

    Accepts a plain state_dict or one under a common wrapper key (``state_dict``, ``model``,
    ...). Raises FileNotFoundError or ValueError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: published weights not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: cannot load with weights_only=True ({exc}); save the published "
            "model's state_dict() (torch.save(model.state_dict(), path)), not the module"
        ) from exc
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict) and all(
                isinstance(v, Tensor) for v in obj[key].values()
            ):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict (a dict of tensors)")
    return dict(obj)


def import_weights(method: str, src: str | os.PathLike, out: str | os.PathLike, **sizes) -> dict:
    """Convert the published weights ``src`` of ``method`` into our checkpoint ``out``.

    Parameters
    ----------
    method : str
        ``dc2fusion``, ``swinfuse``, ``matr`` or ``dilran``.
    src, out : path
        The published state_dict; our checkpoint (written atomically).
    sizes
        Constructor sizes to check against (or, where the weights cannot tell, to use).

    Returns
    -------
    dict
        The network's ``init_args``.
    """
    from fusion3d.learned.recipes import recipe_for

    if method not in IMPORT_METHODS:
        raise ValueError(f"--method: {method!r} is not one of {sorted(IMPORT_METHODS)}")
    recipe = recipe_for(IMPORT_METHODS[method])
    src = Path(src)
    try:
        init_args, state = recipe.convert_published(read_published_state(src), **sizes)
    except ValueError as exc:
        raise ValueError(f"{src}: not {method} weights as published: {exc}") from exc
    model = recipe.build_model(init_args)
    model.load_state_dict(state)  # the converted state fits the network it names
    ckpt = {
        "method": recipe.method,
        "init_args": init_args,
        "model_state": model.state_dict(),
        "variant": "published",
        "source": src.name,
    }
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    n = sum(p.numel() for p in model.parameters())
    log.info("wrote %s (%s, %d parameters, from %s)", out, method, n, src.name)
    return init_args
