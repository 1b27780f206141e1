"""The fusion methods the study knows: the one list the workflow, baselines and tables read.

Each :class:`Method` has its key (the ``methods`` config entry, the ``fused/<method>/``
folder and the wildcard), its display label (Table 1 and figures), its dimensionality
(``"2D"`` or ``"3D"``) and its kind: ``"classic"`` (:mod:`fusion3d.baselines`) or
``"network"`` (trained, then run by inference). The order of :data:`METHODS` is the
order of the paper's Table 1: its published 2D networks (SwinFuse, MATR, DILRAN), then
DC2Fusion; below them our 2D twin of DC2Fusion and the classic fusions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One fusion method: key, display label, ``"2D"``/``"3D"``, ``"classic"``/``"network"``
    and, for a network, its ``architecture`` (the key of its training recipe,
    :func:`fusion3d.learned.recipes.recipe_for`, and of its checkpoints: ``"dcfb"`` for
    both ``dcfb3d`` and ``dcfb2d``)."""

    name: str
    label: str
    dims: str
    kind: str
    architecture: str | None = None


METHODS: tuple[Method, ...] = (
    Method("swinfuse", "SwinFuse", "2D", "network", "swinfuse"),
    Method("matr", "MATR", "2D", "network", "matr"),
    Method("dilran", "DILRAN", "2D", "network", "dilran"),
    Method("dcfb3d", "DC2Fusion (ours)", "3D", "network", "dcfb"),
    Method("dcfb2d", "DCFB slice-wise", "2D", "network", "dcfb"),
    Method("average", "Weighted average", "3D", "classic"),
    Method("maximum", "Maximum", "3D", "classic"),
    Method("pca", "PCA", "3D", "classic"),
    Method("wavelet", "Wavelet (DWT)", "3D", "classic"),
    Method("laplacian", "Laplacian pyramid", "3D", "classic"),
)

#: Methods by key.
BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}
#: Keys of the classic baselines, in the paper's order.
CLASSIC_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS if m.kind == "classic")
#: Keys of the trained networks.
NETWORK_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS if m.kind == "network")
