"""Published weights as our checkpoints: ``fusion3d import-weights [--method M] PUBLISHED OUT``.

The network is recognised from the state_dict's keys and shapes
(:func:`~fusion3d.learned.models.published.identify_published`) unless ``method`` names it;
a ``method`` that contradicts the keys is refused with the network the file looks like.
Its converter (:data:`~fusion3d.learned.models.published.CONVERTERS`: the documented key
map, sizes read from the weights, every missing, unexpected or mis-shaped key named) makes
a self-describing checkpoint that :func:`fusion3d.learned.inference.load_model` and
``fusion3d fuse`` read: ``{"architecture", "init_args", "model_state", "variant":
"published", "source"}``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from fusion3d.io import atomic_path
from fusion3d.learned.models.published import PUBLISHED_NETWORKS

__all__ = ["IMPORT_METHODS", "import_weights", "read_published_state"]

log = logging.getLogger(__name__)

#: ``--method`` of import-weights -> architecture key of the recipe.
IMPORT_METHODS: dict[str, str] = {name: arch for name, (arch, _) in PUBLISHED_NETWORKS.items()}


def read_published_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a published state_dict safely (``weights_only=True``).

    Accepts a plain state_dict or one under a common wrapper key (``state_dict``, ``model``,
    ...; :func:`~fusion3d.learned.models.shared.unwrap_state_dict`). Raises
    FileNotFoundError or ValueError naming the file.
    """
    from fusion3d.learned.models.shared import unwrap_state_dict

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: published weights not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: not a state_dict that torch.load(weights_only=True) reads; save the "
            "published model's state_dict() (torch.save(model.state_dict(), path)), not the module"
        ) from exc
    return unwrap_state_dict(obj, str(path))


def _network(method: str | None, state: dict[str, Tensor], src: Path) -> str:
    """The published network to convert ``state`` as: ``method``, or the one the keys show."""
    from fusion3d.learned.models.published import identify_published

    if method is not None and method not in IMPORT_METHODS:
        raise ValueError(f"--method: {method!r} is not one of {sorted(IMPORT_METHODS)}")
    found = identify_published(state)
    if method is None and found is None:
        raise ValueError(
            f"{src}: the keys match no published network's ({', '.join(IMPORT_METHODS)}); "
            "name it with --method to see which keys differ"
        )
    if method is not None and found is not None and found != method:
        name = PUBLISHED_NETWORKS[found][1]
        raise ValueError(f"{src}: this looks like {name} weights: pass --method {found}")
    if method is None:
        log.info("%s: recognised as %s weights", src, PUBLISHED_NETWORKS[found][1])
    return method or found


def import_weights(
    method: str | None, src: str | os.PathLike, out: str | os.PathLike, **sizes
) -> dict:
    """Convert the published weights ``src`` into our checkpoint ``out``.

    Parameters
    ----------
    method : str or None
        ``dc2fusion``, ``swinfuse``, ``matr`` or ``dilran``; ``None``: recognised from the
        keys and shapes. A method the keys contradict is refused, naming the network the
        file looks like.
    src, out : path
        The published state_dict; our checkpoint (written atomically).
    sizes
        Constructor sizes to check against (or, where the weights cannot tell, to use);
        a key the network does not have is refused, listing the known ones.

    Returns
    -------
    dict
        The network's ``init_args``.
    """
    from fusion3d.learned.models.published import CONVERTERS, check_import_keys
    from fusion3d.learned.recipes import recipe_for

    src = Path(src)
    state = read_published_state(src)
    method = _network(method, state, src)
    recipe = recipe_for(IMPORT_METHODS[method])
    check_import_keys(method, sizes)
    try:
        init_args, converted = CONVERTERS[method](state, **sizes)
    except ValueError as exc:
        from fusion3d.learned.models.published import identify_published

        what = "" if identify_published(state) == method else f"not {method} weights as published: "
        raise ValueError(f"{src}: {what}{exc}") from exc
    model = recipe.build_model(init_args)
    model.load_state_dict(converted)  # the converted state fits the network it names
    ckpt = {
        "architecture": recipe.architecture,
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
