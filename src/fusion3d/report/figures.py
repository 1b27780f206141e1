"""The study's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Every function takes an output ``out`` that is either a prefix (``"figures/panel"``
-> ``figures/panel.png`` and ``figures/panel.pdf``) or explicit ``.png`` / ``.pdf``
path(s); each file is written atomically and the written paths are returned.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from fusion3d.evaluation.long_table import (
    LONG_COLUMNS,
    average_over_seeds,
    method_name,
    method_order,
    metric_name,
)
from fusion3d.io import atomic_path, load_nifti, read_tsv
from fusion3d.metrics.names import metric_axis_label

FORMATS: tuple[str, ...] = ("png", "pdf")
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
DPI = 150
#: Largest side, in pixels, of a raster figure (matplotlib refuses > 2**16).
MAX_PIXELS = 12000

OutSpec = str | os.PathLike | Sequence[str | os.PathLike]


def output_paths(out: OutSpec) -> list[Path]:
    """Resolve ``out`` into the list of files to write.

    A single path ending in ``.png`` or ``.pdf`` is written as is; any other
    single path is a prefix for ``<prefix>.png`` and ``<prefix>.pdf``; a list
    must hold ``.png`` / ``.pdf`` paths only.
    """
    if isinstance(out, str | os.PathLike):
        path = Path(out)
        if path.suffix.lower().lstrip(".") in FORMATS:
            return [path]
        if not path.name:
            raise ValueError(f"out: empty output prefix {out!r}")
        return [Path(f"{os.fspath(path)}.{ext}") for ext in FORMATS]
    paths = [Path(p) for p in out]
    if not paths:
        raise ValueError("out: no output path given")
    bad = [str(p) for p in paths if p.suffix.lower().lstrip(".") not in FORMATS]
    if bad:
        raise ValueError(f"out: unsupported figure format for {bad}; use .png or .pdf")
    return paths


def save_figure(fig: Figure, out: OutSpec, dpi: float = DPI) -> list[Path]:
    """Save ``fig`` to every resolved output atomically and return the paths."""
    FigureCanvasAgg(fig)
    written = []
    for path in output_paths(out):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=dpi)
        written.append(path)
    return written


def _capped_dpi(width_in: float, height_in: float, dpi: float = DPI) -> float:
    """Lower ``dpi`` so the raster stays under :data:`MAX_PIXELS` on its longest side."""
    return max(10.0, min(dpi, MAX_PIXELS / max(width_in, height_in)))


def centre_slices(vol: np.ndarray) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal slices through the centre, oriented for display.

    The array is taken as (x, y, z) in RAS+ voxel order (the model grid): the
    slice is transposed so that the second in-plane axis points up.
    """
    vol = np.asarray(vol, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {vol.shape}")
    i, j, k = (n // 2 for n in vol.shape)
    return {
        "axial": vol[:, :, k].T,
        "coronal": vol[:, j, :].T,
        "sagittal": vol[i, :, :].T,
    }


def _display_range(vol: np.ndarray) -> tuple[float, float]:
    """Robust display window: 0.5th to 99.5th percentile of the non-zero voxels."""
    vals = np.asarray(vol, dtype=np.float32)
    nz = vals[vals != 0]
    if nz.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(nz, [0.5, 99.5])
    lo = min(float(lo), 0.0)
    return lo, float(hi) if hi > lo else lo + 1.0


def _check_panel_subjects(subjects: Sequence[Mapping[str, Any]]) -> list[str]:
    """The methods of the panel's subjects (the same for all); ValueError naming a bad entry."""
    if not subjects:
        raise ValueError("subjects: nothing to plot (empty list)")
    methods: list[str] | None = None
    for sub in subjects:
        missing = [k for k in ("subject_id", "mri", "pet", "fused") if k not in sub]
        if missing:
            raise ValueError(f"subjects: entry {sub.get('subject_id', '?')} lacks key(s) {missing}")
        sid = sub["subject_id"]
        if not sub["fused"]:
            raise ValueError(f"subjects: {sid} has no fused volumes")
        if methods is None:
            methods = list(sub["fused"])
        elif list(sub["fused"]) != methods:
            raise ValueError(
                f"subjects: {sid} has methods {list(sub['fused'])}, expected {methods}"
            )
        shapes = {k: np.shape(sub[k]) for k in ("mri", "pet")}
        shapes.update({m: np.shape(v) for m, v in sub["fused"].items()})
        if len(set(shapes.values())) != 1 or len(shapes["mri"]) != 3:
            raise ValueError(f"subjects: {sid} volumes must be 3D of one shape, got {shapes}")
    assert methods is not None
    return methods


def shared_window(volumes: Sequence[np.ndarray]) -> tuple[float, float]:
    """One display window for several volumes: :func:`_display_range` of all their voxels."""
    return _display_range(np.concatenate([np.ravel(np.asarray(v, np.float32)) for v in volumes]))


#: World axis of each plane's slice position (its index in a RAS+ world point).
PLANE_AXES: dict[str, tuple[int, str]] = {
    "axial": (2, "z"),
    "coronal": (1, "y"),
    "sagittal": (0, "x"),
}


def slice_positions(shape: Sequence[int], affine: np.ndarray | None) -> dict[str, str]:
    """Where :func:`centre_slices` cuts, per plane: ``"z = +12.0 mm"`` (world RAS+ millimetres
    of the centre voxel) or, without an affine, ``"slice 32 / 64"``."""
    centre = [n // 2 for n in shape]
    if affine is None:
        return {p: f"slice {centre[a]} / {shape[a]}" for p, (a, _) in PLANE_AXES.items()}
    world = np.asarray(affine, dtype=float) @ np.array([*centre, 1.0])
    return {p: f"{name} = {world[a]:+.1f} mm" for p, (a, name) in PLANE_AXES.items()}


#: Colour-bar label of the panel's PET (the model grid's PET: SUVR min-max scaled per subject).
PET_UNITS = "PET: SUVR, min-max\nscaled to [0, 1] per subject"


def plot_fusion_panel(
    subjects: Sequence[Mapping[str, Any]], out: OutSpec, *, max_subjects: int = 3
) -> list[Path]:
    """Paper-style qualitative figure: MRI, PET and every fused volume, three planes.

    Every fused image of the panel shares one intensity window (stated under the fused
    columns, with its grey colour bar), so a darker or brighter fusion shows as such; the
    PET has one window and a colour bar; each row names its plane and slice position.

    Parameters
    ----------
    subjects
        Dicts with ``subject_id``, ``mri``, ``pet`` (3D arrays), ``fused``
        (``{method: 3D array}``, the same methods for every subject) and optionally
        ``affine`` (the grid's voxel -> world matrix, for the slice positions in mm).
        Only the first ``max_subjects`` are drawn.
    out
        Output prefix or explicit ``.png`` / ``.pdf`` path(s).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    fig = fusion_panel_figure(subjects, max_subjects=max_subjects)
    return save_figure(fig, out, _capped_dpi(*fig.get_size_inches()))


def fusion_panel_figure(subjects: Sequence[Mapping[str, Any]], *, max_subjects: int = 3) -> Figure:
    """The figure of :func:`plot_fusion_panel` (not saved)."""
    subjects = list(subjects)[:max_subjects]
    methods = _check_panel_subjects(subjects)
    fused_window = shared_window([v for s in subjects for v in s["fused"].values()])
    windows = {
        "pet": shared_window([s["pet"] for s in subjects]),
        **dict.fromkeys(methods, fused_window),
    }
    columns = [("MRI", "mri", "gray"), ("PET", "pet", "inferno")] + [
        (method_name(m), m, "gray") for m in methods
    ]
    nrows, ncols = 3 * len(subjects), len(columns)
    fig = Figure(figsize=(1.9 * ncols + 0.6, 1.9 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    shown = {}
    for s, sub in enumerate(subjects):
        vols = {"mri": sub["mri"], "pet": sub["pet"], **sub["fused"]}
        where = slice_positions(np.shape(sub["mri"]), sub.get("affine"))
        for c, (title, key, cmap) in enumerate(columns):
            vol = np.asarray(vols[key], dtype=np.float32)
            vmin, vmax = windows.get(key) or _display_range(vol)
            for p, (plane, img) in enumerate(centre_slices(vol).items()):
                ax = axes[3 * s + p, c]
                shown[key] = ax.imshow(
                    img, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest"
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if 3 * s + p == 0:
                    ax.set_title(title, fontsize=9)
                if c == 0:
                    label = f"{plane}\n{where[plane]}"
                    ax.set_ylabel(f"{sub['subject_id']}\n{label}" if p == 1 else label, fontsize=7)
    fig.colorbar(shown["pet"], ax=axes[:, 1], location="bottom", aspect=12).set_label(
        PET_UNITS, fontsize=7
    )
    lo, hi = fused_window
    fig.colorbar(shown[methods[0]], ax=axes[:, 2:], location="bottom", aspect=40).set_label(
        f"fused images: one window for every method, [{lo:.2f}, {hi:.2f}] "
        "(0.5th-99.5th percentile of all their non-zero voxels)",
        fontsize=7,
    )
    return fig


GROUP_ORDER: tuple[str, ...] = ("CN", "MCI", "AD")


def pick_panel_subjects(
    split: pd.DataFrame,
    subject_ids: Sequence[str] | None = None,
    *,
    n_subjects: int = 3,
    split_name: str = "test",
) -> list[str]:
    """Choose the subjects of the fusion panel: one per diagnostic group in turn.

    Subjects of ``split_name`` (restricted to ``subject_ids`` when given) are
    taken round-robin over the groups CN, MCI, AD (then any other group),
    each group in ``subject_id`` order, so the choice is deterministic.
    """
    for col in ("subject_id", "split", "group"):
        if col not in split.columns:
            raise ValueError(f"split table: missing column {col!r}")
    if n_subjects < 1:
        raise ValueError(f"n_subjects: must be >= 1, got {n_subjects}")
    rows = split[split["split"] == split_name]
    if subject_ids is not None:
        rows = rows[rows["subject_id"].isin(set(subject_ids))]
    if rows.empty:
        raise ValueError(f"split table: no {split_name!r} subject with fused images for the panel")
    groups = sorted(
        rows["group"].astype(str).unique(),
        key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g),
    )
    queues = {g: sorted(rows.loc[rows["group"].astype(str) == g, "subject_id"]) for g in groups}
    chosen: list[str] = []
    while len(chosen) < n_subjects and any(queues.values()):
        for g in groups:
            if queues[g] and len(chosen) < n_subjects:
                chosen.append(queues[g].pop(0))
    return chosen


def fusion_panel_from_tables(
    split: pd.DataFrame,
    indexes: Mapping[str, str | os.PathLike | pd.DataFrame],
    png: str | os.PathLike,
    pdf: str | os.PathLike | None = None,
    *,
    n_subjects: int = 3,
    split_name: str = "test",
    reference: str = "dcfb3d",
) -> list[Path]:
    """Draw :func:`plot_fusion_panel` from the split table and the methods' fused indexes.

    Parameters
    ----------
    split
        ``split/split.tsv``: ``subject_id``, ``split``, ``group``, ``model_mri``,
        ``model_pet`` (the model-grid sources).
    indexes
        ``{method: index.tsv path or DataFrame}`` with ``subject_id``, ``fused_path``.
    png, pdf
        Output files (``pdf`` optional).
    n_subjects, split_name
        How many subjects of which split (chosen by :func:`pick_panel_subjects`
        among those every method has fused).
    reference
        The study's own method, drawn in the last column (see :func:`method_order`).
    """
    if not indexes:
        raise ValueError("indexes: no fused method given")
    for col in ("model_mri", "model_pet"):
        if col not in split.columns:
            raise ValueError(f"split table: missing column {col!r}")
    fused_paths: dict[str, dict[str, str]] = {}
    for method in method_order(indexes, reference):
        index = indexes[method]
        is_frame = isinstance(index, pd.DataFrame)
        frame = index if is_frame else read_tsv(index, dtype=str)
        where = f"{method} index" + ("" if is_frame else f" {index}")
        for col in ("subject_id", "fused_path"):
            if col not in frame.columns:
                raise ValueError(f"{where}: missing column {col!r}")
        fused_paths[method] = dict(zip(frame["subject_id"], frame["fused_path"], strict=True))
    common = set.intersection(*(set(p) for p in fused_paths.values()))
    chosen = pick_panel_subjects(
        split, sorted(common), n_subjects=n_subjects, split_name=split_name
    )
    info = split.set_index("subject_id")
    subjects = []
    for sid in chosen:
        row = info.loc[sid]
        mri, affine = load_nifti(row["model_mri"])
        subjects.append(
            {
                "subject_id": f"{sid} ({row['group']})",
                "mri": mri,
                "pet": load_nifti(row["model_pet"])[0],
                "fused": {m: load_nifti(paths[sid])[0] for m, paths in fused_paths.items()},
                "affine": affine,
            }
        )
    out = [png] if pdf is None else [png, pdf]
    return plot_fusion_panel(subjects, out, max_subjects=n_subjects)


def plot_metric_boxes(
    long: pd.DataFrame,
    out: OutSpec,
    *,
    protocol: str = "paper",
    split: str | None = "test",
    reference: str = "dcfb3d",
) -> list[Path]:
    """One box plot per metric (methods on the x axis) for one protocol and split.

    Each axis names its metric's unit; each method its n; the title the number of
    subjects; every subject is a dot over its box.
    """
    return save_figure(
        metric_boxes_figure(long, protocol=protocol, split=split, reference=reference), out
    )


def metric_boxes_figure(
    long: pd.DataFrame,
    *,
    protocol: str = "paper",
    split: str | None = "test",
    reference: str = "dcfb3d",
) -> Figure:
    """The figure of :func:`plot_metric_boxes` (not saved)."""
    if not isinstance(long, pd.DataFrame):
        raise ValueError(f"long: expected a DataFrame, got {type(long).__name__}")
    missing = [c for c in LONG_COLUMNS if c not in long.columns]
    if missing:
        raise ValueError(f"metrics table: missing column(s) {missing}")
    sel = average_over_seeds(long)  # a network: one value per subject, its mean over seeds
    sel = sel[sel["protocol"] == protocol]
    if split is not None:
        sel = sel[sel["split"] == split]
    sel = sel[np.isfinite(sel["value"].astype(float))]
    if sel.empty:
        raise ValueError(
            f"metrics table: no finite values for protocol {protocol!r}, split {split!r}"
        )
    metrics = list(dict.fromkeys(sel["metric"]))
    methods = method_order(sel["method"].unique(), reference)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    width = max(3.5, 0.55 * len(methods) + 1.2)
    fig = Figure(figsize=(width * ncols, 3.4 * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        data, labels = [], []
        for m in methods:
            vals = sel[(sel["metric"] == metric) & (sel["method"] == m)]["value"].to_numpy(float)
            if vals.size:
                data.append(vals)
                labels.append(f"{method_name(m)} (n={vals.size})")
        ax.boxplot(data, tick_labels=labels, showmeans=True)
        for x, vals in enumerate(data, start=1):  # every subject, so a box of 4 shows as 4
            ax.plot(np.full(vals.size, x), vals, "o", ms=2.5, color="0.3", alpha=0.6, zorder=3)
        ax.set_title(metric_name(metric), fontsize=10)
        ax.set_ylabel(metric_axis_label(metric), fontsize=8)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    n_subjects = sel["subject_id"].nunique()
    fig.suptitle(
        f"Protocol {protocol}, {split or 'all'} split: {n_subjects} subjects (n per box under "
        "each method; a network's value per subject is its mean over seeds; dots: subjects)",
        fontsize=10,
    )
    return fig


#: History columns that are not loss terms (``stop``: why the run stopped, on its last row).
_HISTORY_META = ("epoch", "lr", "seconds", "loss", "stop")


def history_stop(hist: pd.DataFrame) -> str | None:
    """Where and why a run stopped, from its ``history.csv``: ``"stopped at epoch 12
    (patience)"`` (``cap``: ``train.epochs`` reached; ``time budget``); None for a history
    without a ``stop`` mark (an interrupted run, or one written before early stopping)."""
    if "stop" not in hist.columns:
        return None
    marked = hist[hist["stop"].notna() & (hist["stop"].astype(str) != "")]
    if marked.empty:
        return None
    last = marked.sort_values("epoch").iloc[-1]
    return f"stopped at epoch {int(last['epoch'])} ({last['stop']})"


def _check_history(name: str, hist) -> None:
    if not isinstance(hist, pd.DataFrame):
        raise ValueError(f"histories[{name!r}]: expected a DataFrame, got {type(hist).__name__}")
    if "epoch" not in hist.columns:
        raise ValueError(f"histories[{name!r}]: missing column 'epoch'")
    if hist.empty:
        raise ValueError(f"histories[{name!r}]: no epochs")


def _history_groups(histories: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, pd.DataFrame]]:
    """``{"dcfb3d": {"seed 1": history, ...}}`` from keys ``"<network> seed <s>"`` (or plain)."""
    groups: dict[str, dict[str, pd.DataFrame]] = {}
    for key, hist in histories.items():
        _check_history(key, hist)
        network, _, seed = key.partition(" seed ")
        groups.setdefault(network, {})[f"seed {seed}" if seed else network] = hist
    return groups


def plot_training_curves(histories: Mapping[str, pd.DataFrame], out: OutSpec) -> list[Path]:
    """Training curves: one row per network, one line per seed.

    Columns: the total loss and every loss term of the network's recipe (every history
    column that is not ``epoch``, ``lr``, ``seconds`` or ``val_*``; symmetric log scale), then each
    ``val_*`` column (validation PSNR, SSIM and the selection score). A run's legend entry
    in the validation panels says where and why it stopped (:func:`history_stop`: patience
    or the cap). Keys of ``histories`` are ``"<network> seed <seed>"`` (or a network alone).
    """
    return save_figure(training_curves_figure(histories), out)


def training_curves_figure(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """The figure of :func:`plot_training_curves`."""
    if not histories:
        raise ValueError("histories: nothing to plot (empty mapping)")
    groups = _history_groups(histories)
    for key, hist in histories.items():
        meta = (*_HISTORY_META[:3], "stop")
        if not [c for c in hist.columns if c not in meta and not c.startswith("val_")]:
            raise ValueError(f"histories[{key!r}]: no 'loss' or loss-term column to plot")
    val_cols = sorted({c for h in histories.values() for c in h.columns if c.startswith("val_")})
    fig = Figure(figsize=(4.2 * (1 + len(val_cols)), 3.0 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1 + len(val_cols), squeeze=False)
    for row, (network, runs) in zip(axes, groups.items(), strict=True):
        for i, (run, hist) in enumerate(runs.items()):
            h = hist[hist["epoch"] > 0].sort_values("epoch")
            style = ("-", "--", ":", "-.")[i % 4]
            terms = [c for c in h.columns if c not in _HISTORY_META and not c.startswith("val_")]
            for j, col in enumerate(["loss", *terms] if "loss" in h.columns else terms):
                row[0].plot(
                    h["epoch"],
                    h[col],
                    style,
                    color=f"C{j}",
                    lw=1.2 if j else 2.0,
                    label=col if i == 0 else None,
                )
            hv = hist.sort_values("epoch")
            stopped = history_stop(hist)
            label = f"{run}, {stopped}" if stopped else run
            for ax, col in zip(row[1:], val_cols, strict=True):
                if col in hv.columns:
                    ax.plot(hv["epoch"], hv[col], style, marker="o", markersize=2, label=label)
        row[0].set_yscale("symlog", linthresh=1e-2)  # terms may be negative (LNCC)
        row[0].set_title(f"{method_name(network)}: loss and its terms", fontsize=9)
        row[0].legend(fontsize=6, ncol=2)
        for ax, col in zip(row[1:], val_cols, strict=True):
            ax.set_title(f"{method_name(network)}: {col}", fontsize=9)
            ax.legend(fontsize=6)
        for ax in row:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
    return fig


def _thumbnail(img: np.ndarray, max_side: int = 400) -> np.ndarray:
    """Subsample an image so its longest side is at most ``max_side`` pixels."""
    step = max(1, math.ceil(max(img.shape[:2]) / max_side))
    return img[::step, ::step]


def plot_qc_montage_pages(
    qc_pngs: Sequence[str | os.PathLike],
    pages_dir: str | os.PathLike,
    pdf: str | os.PathLike,
    *,
    per_page: int = 48,
    ncols: int = 8,
) -> list[Path]:
    """The QC montage of a whole cohort, ``per_page`` subjects a page.

    One figure with hundreds of panels is unreadable, so the subjects (in the order
    given) are cut into pages: ``pages_dir/page-001.png``, ``page-002.png``, ... and
    one multi-page ``pdf`` holding them all. Returns the PNG pages.
    """
    if per_page < 1:
        raise ValueError(f"per_page: must be >= 1, got {per_page}")
    images = _read_qc_images(qc_pngs)
    pages_dir = Path(pages_dir)
    pages_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with atomic_path(Path(pdf)) as tmp_pdf, PdfPages(tmp_pdf) as book:
        for start in range(0, len(images), per_page):
            fig = _qc_montage_figure(images[start : start + per_page], ncols)
            dpi = _capped_dpi(*fig.get_size_inches())
            page = pages_dir / f"page-{start // per_page + 1:03d}.png"
            written += save_figure(fig, page, dpi)
            book.savefig(fig, dpi=dpi)
    return written


def _read_qc_images(qc_pngs: Sequence[str | os.PathLike]) -> list[tuple[Path, np.ndarray]]:
    """Read (and thumbnail) the per-subject QC images, naming a missing or broken file."""
    paths = [Path(p) for p in qc_pngs]
    if not paths:
        raise ValueError("qc_pngs: nothing to plot (empty list)")
    images = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: QC image not found")
        try:
            images.append((path, _thumbnail(mpimg.imread(path))))
        except Exception as exc:  # PIL / matplotlib raise many types for broken files
            raise ValueError(f"{path}: cannot read image ({exc})") from exc
    return images


def _qc_montage_figure(images: Sequence[tuple[Path, np.ndarray]], ncols: int) -> Figure:
    """A grid of QC thumbnails, ``ncols`` a row, each titled by its subject."""
    if ncols < 1:
        raise ValueError(f"ncols: must be >= 1, got {ncols}")
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    fig = Figure(figsize=(3.0 * ncols, 3.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (path, img) in zip(axes, images, strict=False):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(path.name.split(".")[0], fontsize=7)
        ax.axis("off")
    for ax in axes[len(images) :]:
        ax.set_visible(False)
    return fig


def plot_paper_comparison(table: pd.DataFrame, out: OutSpec) -> list[Path]:
    """Ours beside the paper's Table 1: one panel per paper column, one pair of points per method.

    ``table``: :func:`fusion3d.report.paper.compare_with_paper`. The paper's value is drawn with its
    reported sd (grey, hollow); ours with its 95 % CI of the mean over test subjects (filled).
    """
    if table.empty:
        raise ValueError("paper comparison: no method of the paper's Table 1 in this study")
    columns = list(dict.fromkeys(table["paper_column"]))
    methods = list(dict.fromkeys(table["method"]))
    fig = Figure(figsize=(3.2 * len(columns), 3.4), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False).ravel()
    x = np.arange(len(methods))
    for ax, column in zip(axes, columns, strict=True):
        part = table[table["paper_column"] == column].set_index("method").reindex(methods)
        ax.errorbar(
            x - 0.12,
            part["paper_mean"],
            yerr=part["paper_sd"],
            fmt="o",
            mfc="white",
            color="0.45",
            capsize=3,
            label="paper (mean +- sd)",
        )
        low = (part["ours_mean"] - part["ours_ci_low"]).fillna(0.0)
        high = (part["ours_ci_high"] - part["ours_mean"]).fillna(0.0)
        ax.errorbar(
            x + 0.12,
            part["ours_mean"],
            yerr=[low, high],
            fmt="o",
            color="C0",
            capsize=3,
            label="ours (mean, 95 % CI)",
        )
        ax.set_xticks(x, [method_name(m) for m in methods], rotation=30, ha="right", fontsize=8)
        metric = part["metric"].dropna().iloc[0]
        ax.set_title(f"{column} (ours: {metric_name(metric)})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    n = int(table["n_subjects"].max())
    fig.suptitle(
        f"Paper's Table 1 beside this study (paper protocol, {n} test subjects)", fontsize=10
    )
    return save_figure(fig, out)
