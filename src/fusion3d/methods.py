"""The fusion methods the study knows: the one list the workflow, baselines and tables read.

Each :class:`Method` has its key (the ``methods`` config entry, the ``fused/<method>/<run>/``
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

#: The methods of the paper's Table 1 (its published 2D networks and DC2Fusion), whose
#: published values :data:`fusion3d.report.paper.PAPER_TABLE1` holds.
PAPER_METHODS: tuple[str, ...] = ("swinfuse", "matr", "dilran", "dcfb3d")
#: Methods by key.
BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}
#: Keys of the classic baselines, in the paper's order.
CLASSIC_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS if m.kind == "classic")
#: Keys of the trained networks.
NETWORK_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS if m.kind == "network")

# --- Runs: one layout for every method ------------------------------------------------------
# Every method's outputs live under ``<stage>/<method>/<run>/`` (``fused/``, ``metrics/``,
# ``probe/features/``; ``train/`` for networks). A network has one run per seed of
# ``train.seeds`` (``seed-<n>``); a deterministic (classic) method has one run,
# :data:`DETERMINISTIC_RUN`.

#: The run of a deterministic method (it has no seed).
DETERMINISTIC_RUN = "deterministic"
#: What a run is called, as a Snakemake wildcard constraint.
RUN_PATTERN = r"seed-\d+|" + DETERMINISTIC_RUN


def run_name(seed: int | None) -> str:
    """The run of a seed: ``3407`` -> ``"seed-3407"``; ``None`` -> :data:`DETERMINISTIC_RUN`."""
    return DETERMINISTIC_RUN if seed is None else f"seed-{int(seed)}"


def run_seed(run: str) -> int | None:
    """The seed of a run (inverse of :func:`run_name`).

    Raises
    ------
    ValueError
        If ``run`` is neither ``seed-<n>`` nor :data:`DETERMINISTIC_RUN`.
    """
    if run == DETERMINISTIC_RUN:
        return None
    if run.startswith("seed-") and run[5:].isdigit():
        return int(run[5:])
    raise ValueError(f"run {run!r}: expected seed-<n> or {DETERMINISTIC_RUN}")


def method_runs(methods: list[str] | tuple[str, ...], seeds: list[int]) -> list[tuple[str, str]]:
    """``(method, run)`` of every run of a study: the networks of ``methods``, each once per
    seed, then the classic methods, each once (each group in the order of ``methods``; the
    order of the study's long metric table).

    Raises
    ------
    ValueError
        If a method is not one of :data:`METHODS`.
    """
    unknown = [m for m in methods if m not in BY_NAME]
    if unknown:
        raise ValueError(f"method(s) {unknown}: expected one of {', '.join(BY_NAME)}")
    networks = [m for m in methods if BY_NAME[m].kind == "network"]
    classic = [m for m in methods if BY_NAME[m].kind != "network"]
    return [(m, run_name(s)) for m in networks for s in seeds] + [
        (m, DETERMINISTIC_RUN) for m in classic
    ]
