"""Evaluation tables: per-subject metrics, the paper's Table 1, paired tests, group breakdown.

The per-subject metrics of one method are kept in a LONG table (one row per
subject, protocol and metric) with the columns of :data:`LONG_COLUMNS`; every
summary in this module is computed from that table, so all methods are
compared on the same subjects in the same way.

Seeds: a network trained with several seeds has one row per seed (column ``seed``;
empty for a classic method). Every summary first averages each subject's value over
the seeds (:func:`average_over_seeds`), so the mean +- sd over subjects, the paired
tests and the group breakdown all use one seed-averaged value per subject and method;
Table 1 gives beside it the sd across seeds of the test-set mean (:func:`seed_spread`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fusion3d.io import atomic_path, load_nifti
from fusion3d.methods import BY_NAME
from fusion3d.metrics.names import METRIC_LABELS, TABLE1_METRICS

LONG_COLUMNS: tuple[str, ...] = (
    "subject_id",
    "split",
    "group",
    "method",
    "protocol",
    "metric",
    "value",
)

#: Display labels of metric keys (:data:`fusion3d.metrics.names.METRIC_LABELS`).
METRIC_NAMES: dict[str, str] = METRIC_LABELS
#: Table 1 columns (:data:`fusion3d.metrics.names.TABLE1_METRICS`; see :data:`PAPER_FMI_NOTE`).
PAPER_METRICS: tuple[str, ...] = TABLE1_METRICS

#: Which Table 1 column stands for the paper's "FMI", and why (measured with
#: ``benchmarks/bench_paper_agreement.py``); printed under the paper protocol's table.
PAPER_FMI_NOTE = (
    "The paper's FMI column is FSIM here: the published evaluation code has no FMI "
    "function, and its fsim (phasepack phase congruency summed over 6 orientations, "
    "OpenCV CV_16U Scharr gradients), the metric it reports beside PSNR, SSIM, NMI and "
    "MI, gives 0.83-0.86 for every classic and network-like fusion of realistic slices, "
    "as the paper's 0.795-0.817 for all four methods; the textbook FSIM (FSIM_Zhang, "
    "0.76-0.85) and Haghighat's FMI (FMI_Haghighat, 0.17-0.68) spread far wider. MI: the "
    "published mutual_information (10 bins, nats)."
)

#: What Table 1 says of its seed columns.
SEEDS_NOTE = (
    "A network's value per subject is the mean over its seeds (column Seeds); in brackets: "
    "the sample sd across seeds of the test-set mean."
)

#: The significance level that the notes of the paired tests and Table 1 refer to.
ALPHA = 0.05

MetricsFn = Callable[..., Mapping[str, float]]


def method_name(method: str) -> str:
    """Display name of ``method`` (the key itself when unknown)."""
    return BY_NAME[method].label if method in BY_NAME else method


def metric_name(metric: str) -> str:
    """Display name of a metric key."""
    return METRIC_NAMES.get(metric, metric.upper())


def method_order(methods: Iterable[str], reference: str | None = "dcfb3d") -> list[str]:
    """Order methods as the paper's Table 1 lists them: the published 2D networks (SwinFuse,
    MATR, DILRAN), DC2Fusion, then below them our 2D twin and the classic fusions (the order
    of :data:`fusion3d.methods.METHODS`); unknown methods last. ``reference`` is accepted
    for compatibility; it does not move a row."""
    known = list(BY_NAME)
    unique = list(dict.fromkeys(methods))
    return sorted(unique, key=lambda m: (known.index(m), m) if m in known else (len(known), m))


def average_over_seeds(long: pd.DataFrame) -> pd.DataFrame:
    """One row per subject, method, protocol and metric: the mean over the ``seed`` rows.

    A table without a ``seed`` column is returned as it is. Non-finite values are left
    out of a mean (a subject with none finite keeps NaN). Columns: :data:`LONG_COLUMNS`.
    """
    if "seed" not in long.columns:
        return long
    keys = [c for c in LONG_COLUMNS if c != "value"]
    values = long["value"].astype(float).where(np.isfinite(long["value"].astype(float)))
    out = (
        long.assign(value=values)
        .groupby(keys, sort=False, dropna=False)["value"]
        .mean()
        .reset_index()
    )
    return out[list(LONG_COLUMNS)]


def seed_spread(
    long: pd.DataFrame, *, split: str | None = "test", protocol: str | None = None
) -> dict[tuple[str, str], tuple[float, int]]:
    """``(sd, n_seeds)`` per (method, metric): the sample sd across seeds of the mean over
    the ``split``'s subjects (``protocol``: all when ``None``, then keyed per protocol too is
    not needed: pass one). Methods with one seed (or none: classic) are left out."""
    if "seed" not in long.columns:
        return {}
    sel = _select(long, split=split, protocol=protocol)
    sel = sel[sel["seed"].notna() & (sel["seed"].astype(str) != "")]
    sel = sel[np.isfinite(sel["value"].astype(float))]
    out: dict[tuple[str, str], tuple[float, int]] = {}
    if sel.empty:
        return out
    per_seed = sel.groupby(["method", "metric", "seed"])["value"].mean()
    for (method, metric), vals in per_seed.groupby(level=["method", "metric"]):
        if len(vals) > 1:
            out[(str(method), str(metric))] = (float(np.std(vals.to_numpy(), ddof=1)), len(vals))
    return out


def _check_columns(frame: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` naming the missing columns of ``frame``."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; has {list(frame.columns)}")


def _check_evaluation_inputs(
    method: str, index: pd.DataFrame, protocols: Sequence[str] | str, subjects: pd.DataFrame
) -> list[str]:
    """Check :func:`evaluate_method`'s tables and protocols; return the protocols as a list."""
    _check_columns(index, ("subject_id", "fused_path"), f"{method} index")
    _check_columns(
        subjects, ("subject_id", "split", "group", "mri_path", "pet_path"), "subjects table"
    )
    protocols = [protocols] if isinstance(protocols, str) else list(protocols)
    if not protocols:
        raise ValueError("protocols: at least one protocol is needed")
    if index.empty:
        raise ValueError(f"{method} index: no fused images listed")
    for name, frame in (("subjects table", subjects), (f"{method} index", index)):
        dup = frame["subject_id"][frame["subject_id"].duplicated()].tolist()
        if dup:
            raise ValueError(f"{name}: duplicate subject_id {dup[:5]}")
    unknown = sorted(set(index["subject_id"]) - set(subjects["subject_id"]))
    if unknown:
        raise ValueError(f"{method} index: subject_id(s) not in the subjects table: {unknown[:5]}")
    return protocols


def _load_sources(subject_id: str, sub: pd.Series) -> tuple:
    """One subject's MRI, PET and mask (``None`` without one), checked to share one shape."""
    mri, _ = load_nifti(sub["mri_path"])
    pet, _ = load_nifti(sub["pet_path"])
    if pet.shape != mri.shape:
        raise ValueError(
            f"{subject_id}: {sub['pet_path']} has shape {pet.shape} but {sub['mri_path']} "
            f"has {mri.shape}"
        )
    mask = None
    mask_path = sub.get("mask_path")
    if isinstance(mask_path, str | os.PathLike) and str(mask_path).strip():
        mask_arr, _ = load_nifti(mask_path)
        if mask_arr.shape != mri.shape:
            raise ValueError(
                f"{subject_id}: mask {mask_path} has shape {mask_arr.shape}, images {mri.shape}"
            )
        mask = mask_arr > 0.5
    return mri, pet, mask


def _check_fused_shape(subject_id: str, fused_path, fused, sub: pd.Series, shape) -> None:
    if fused.shape != shape:
        raise ValueError(
            f"{subject_id}: {fused_path} has shape {fused.shape} but {sub['mri_path']} has {shape}"
        )


def _subject_rows(
    subject_id: str, sub: pd.Series, jobs: list[tuple[int, str, object]], protocols, fn
) -> list[tuple[int, dict[str, object]]]:
    """Rows of one subject for every ``(entry, method, fused_path)`` of ``jobs``.

    The sources are loaded once; without ``fn`` their source-side metric work is done
    once too (:class:`fusion3d.metrics.prepared.SubjectSources`) and reused for every
    fused image.
    """
    mri, pet, mask = _load_sources(subject_id, sub)
    if fn is None:
        from fusion3d.metrics.prepared import SubjectSources, score

        prepared = SubjectSources(mri, pet, mask)

        def fn(fused, _mri, _pet, *, protocol, mask=None):
            return score(fused, prepared, protocol)

    rows = []
    for entry, method, fused_path in jobs:
        fused, _ = load_nifti(fused_path)
        _check_fused_shape(subject_id, fused_path, fused, sub, mri.shape)
        for protocol in protocols:
            for metric, value in fn(fused, mri, pet, protocol=protocol, mask=mask).items():
                row = {"subject_id": subject_id, "split": sub["split"], "group": sub["group"]}
                row.update(method=method, protocol=protocol, metric=str(metric))
                rows.append((entry, {**row, "value": float(value)}))
    return rows


def evaluate_methods(
    entries: Sequence[tuple[str, pd.DataFrame]],
    *,
    protocols: Sequence[str],
    subjects: pd.DataFrame,
    metrics_fn: MetricsFn | None = None,
) -> list[pd.DataFrame]:
    """:func:`evaluate_method` for several fused indexes, all fused images of a subject in one pass.

    Each subject's sources are loaded and prepared once and every fused image of it (any
    method, any seed) is scored against them: the sources' side of the metrics (phase
    congruency, gradients, histograms, VIF pyramids, ...) is computed once per subject
    instead of once per fused image. Memory: one subject's sources and one fused image.

    Parameters
    ----------
    entries
        ``(method, index)`` pairs, as :func:`evaluate_method` takes them (a method may
        appear more than once, e.g. once per seed).
    protocols, subjects, metrics_fn
        As for :func:`evaluate_method`; with ``metrics_fn`` nothing is prepared (each
        call gets the images).

    Returns
    -------
    list of pandas.DataFrame
        One long table per entry (columns :data:`LONG_COLUMNS`, in its index order).
    """
    checked = [_check_evaluation_inputs(m, ix, protocols, subjects) for m, ix in entries]
    protocols = checked[0] if checked else []
    info = subjects.set_index("subject_id")
    jobs: dict[str, list[tuple[int, str, object]]] = {}
    for entry, (method, index) in enumerate(entries):
        for subject_id, path in zip(index["subject_id"], index["fused_path"], strict=True):
            jobs.setdefault(subject_id, []).append((entry, method, path))
    rows: list[list[dict[str, object]]] = [[] for _ in entries]
    for subject_id, subject_jobs in jobs.items():
        for entry, row in _subject_rows(
            subject_id, info.loc[subject_id], subject_jobs, protocols, metrics_fn
        ):
            rows[entry].append(row)
    return [pd.DataFrame(r, columns=list(LONG_COLUMNS)) for r in rows]


def evaluate_method(
    method: str,
    index: pd.DataFrame,
    *,
    protocols: Sequence[str],
    subjects: pd.DataFrame,
    metrics_fn: MetricsFn | None = None,
) -> pd.DataFrame:
    """Compute every metric of every protocol for each fused volume of one method.

    Parameters
    ----------
    method
        Method key written into the ``method`` column.
    index
        The method's fused index: columns ``subject_id``, ``fused_path``.
    protocols
        Protocol names passed to ``compute_metrics`` (e.g. ``"paper"``).
    subjects
        Columns ``subject_id``, ``split``, ``group``, ``mri_path``, ``pet_path``,
        ``mask_path`` (``mask_path`` may be absent or empty: no mask).
    metrics_fn
        ``compute_metrics(fused, mri, pet, *, protocol, mask=None) -> dict``; default:
        the prepared path of :mod:`fusion3d.metrics.prepared` (the same values as
        :func:`fusion3d.metrics.compute_metrics`).

    Returns
    -------
    pandas.DataFrame
        Long table with the columns of :data:`LONG_COLUMNS`, in index order.

    Raises
    ------
    ValueError
        Missing columns, no protocols, duplicate or unknown subject ids, a
        fused image whose shape differs from its sources.
    """
    return evaluate_methods(
        [(method, index)], protocols=protocols, subjects=subjects, metrics_fn=metrics_fn
    )[0]


#: Subjects a job of the evaluation pass scores (rule evaluate_pass): 100 subjects x 30 fused
#: images at 128^3 are about 1 h of one CPU.
EVALUATION_SUBJECTS_PER_JOB = 100


def pass_tables(
    root: str, n_subjects: int, per_job: int = EVALUATION_SUBJECTS_PER_JOB
) -> list[str]:
    """The evaluation pass's shard tables of a study of ``n_subjects`` subjects under ``root``.

    ``ceil(n_subjects / per_job)`` shards (at least one):
    ``<root>/metrics/pass/shard-<k>-of-<n>.tsv``.
    """
    n = max(1, -(-int(n_subjects) // int(per_job)))
    return [f"{root}/metrics/pass/shard-{k}-of-{n}.tsv" for k in range(n)]


def evaluate_pass(
    entries: Sequence[tuple[str, object, pd.DataFrame]],
    *,
    protocols: Sequence[str],
    subjects: pd.DataFrame,
    shard: int = 0,
    n_shards: int = 1,
) -> pd.DataFrame:
    """One shard of the evaluation pass: every fused image of a share of the subjects.

    The subjects listed in any index, sorted, are dealt to ``n_shards`` shards in turn
    (subject ``i`` to shard ``i % n_shards``); this shard's subjects are scored with
    :func:`evaluate_methods` (sources prepared once per subject, every method and seed).

    Parameters
    ----------
    entries
        ``(method, seed, index)``: a fused index per method and seed (``seed`` ``None``
        for a classic method).
    protocols, subjects
        As for :func:`evaluate_method`.
    shard, n_shards
        Which share of the subjects (``0 <= shard < n_shards``).

    Returns
    -------
    pandas.DataFrame
        The long tables of every entry, one after the other, with a ``seed`` column.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard: {shard} is not in 0..{n_shards - 1}")
    ids = sorted({str(s) for _, _, index in entries for s in index["subject_id"]})
    mine = set(ids[shard::n_shards])
    kept = []
    for method, seed, index in entries:
        part = index[index["subject_id"].astype(str).isin(mine)]
        if not part.empty:
            kept.append((method, seed, part))
    tables = evaluate_methods(
        [(m, ix) for m, _, ix in kept], protocols=protocols, subjects=subjects
    )
    out = [t.assign(seed=seed) for (_, seed, _), t in zip(kept, tables, strict=True)]
    columns = [*LONG_COLUMNS, "seed"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=columns)


def select_pass_rows(
    passes: Sequence[pd.DataFrame], method: str, seed, index: pd.DataFrame
) -> pd.DataFrame:
    """One method's (and seed's) rows of the :func:`evaluate_pass` shards, in index order.

    Raises
    ------
    ValueError
        When a subject of ``index`` has no rows in the shards (naming it).
    """
    long = pd.concat(passes, ignore_index=True)
    sel = long[long["method"].astype(str) == method]
    if seed is not None:
        sel = sel[pd.to_numeric(sel["seed"], errors="coerce") == int(seed)]
    missing = sorted(set(index["subject_id"].astype(str)) - set(sel["subject_id"].astype(str)))
    if missing:
        raise ValueError(f"{method} (seed {seed}): no metric rows for {missing[:5]} in the shards")
    order = {s: i for i, s in enumerate(index["subject_id"].astype(str))}
    sel = sel[sel["subject_id"].astype(str).isin(order)]
    key = sel["subject_id"].astype(str).map(order)
    sel = sel.assign(_order=key.to_numpy()).sort_values("_order", kind="stable")
    return sel[list(LONG_COLUMNS)].reset_index(drop=True)


def _select(long: pd.DataFrame, *, split: str | None, protocol: str | None = None) -> pd.DataFrame:
    """Rows of ``long`` in ``split`` (all when ``None``) and ``protocol`` (all when ``None``)."""
    _check_columns(long, LONG_COLUMNS, "metrics table")
    sel = long
    if split is not None:
        sel = sel[sel["split"] == split]
    if protocol is not None:
        sel = sel[sel["protocol"] == protocol]
    return sel


def _fmt(mean: float, std: float, n: int, decimals: int = 3) -> str:
    """``"mean +- std"``; just the mean when one subject; ``"n/a"`` when none."""
    if n == 0 or not np.isfinite(mean):
        return "n/a"
    if n < 2 or not np.isfinite(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} +- {std:.{decimals}f}"


def _summary(
    long: pd.DataFrame, *, split: str | None, protocol: str, metrics: Sequence[str], reference: str
) -> tuple[list[str], dict[tuple[str, str], tuple[float, float, int]]]:
    """Method order and ``(mean, std, n)`` per (method, metric) for Table 1."""
    sel = _select(long, split=split, protocol=protocol)
    if sel.empty:
        raise ValueError(f"metrics table: no rows for split {split!r} and protocol {protocol!r}")
    sel = sel[np.isfinite(sel["value"].astype(float))]
    methods = method_order(sel["method"].unique(), reference)
    stats_: dict[tuple[str, str], tuple[float, float, int]] = {}
    for (method, metric), grp in sel.groupby(["method", "metric"]):
        vals = grp["value"].to_numpy(dtype=float)
        std = float(np.std(vals, ddof=1)) if vals.size > 1 else math.nan
        stats_[(str(method), str(metric))] = (float(np.mean(vals)), std, int(vals.size))
    return methods, stats_


def table1(
    long: pd.DataFrame,
    *,
    split: str | None = "test",
    protocol: str = "paper",
    metrics: Sequence[str] = PAPER_METRICS,
    reference: str = "dcfb3d",
) -> pd.DataFrame:
    """Table 1 in the paper's layout: one row per method, ``mean +- std`` per metric.

    The standard deviation is the sample one (``ddof=1``) over subjects; a
    metric with one subject shows the mean only, a missing one ``"n/a"``.
    Rows follow :func:`method_order` (the paper's order, its own method after its three
    2D baselines). Each subject's value is first averaged over seeds
    (:func:`average_over_seeds`); when a network has several seeds, a ``Seeds`` column and
    one ``<metric> sd across seeds`` column per metric (:func:`seed_spread`) follow.

    Returns
    -------
    pandas.DataFrame
        Columns ``Method``, ``2D/3D``, one display-named column per metric, and the seed
        columns when there are several seeds.
    """
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics: at least one metric is needed")
    methods, summary = _summary(
        average_over_seeds(long),
        split=split,
        protocol=protocol,
        metrics=metrics,
        reference=reference,
    )
    spread = seed_spread(long, split=split, protocol=protocol)
    columns = ["Method", "2D/3D"] + [metric_name(m) for m in metrics]
    if spread:
        columns += ["Seeds"] + [seed_column(m) for m in metrics]
    rows = []
    for method in methods:
        row = {
            "Method": method_name(method),
            "2D/3D": BY_NAME[method].dims if method in BY_NAME else "n/a",
        }
        for metric in metrics:
            mean, std, n = summary.get((method, metric), (math.nan, math.nan, 0))
            row[metric_name(metric)] = _fmt(mean, std, n)
        if spread:
            n_seeds = max(
                (spread[(method, m)][1] for m in metrics if (method, m) in spread), default=1
            )
            row["Seeds"] = n_seeds
            for metric in metrics:
                sd = spread.get((method, metric), (math.nan, 1))[0]
                row[seed_column(metric)] = f"{sd:.3f}" if np.isfinite(sd) else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def seed_column(metric: str) -> str:
    """Table 1's column of the sd across seeds of ``metric``."""
    return f"{metric_name(metric)} sd across seeds"


def _best_rows(
    methods: Sequence[str],
    summary: Mapping[tuple[str, str], tuple[float, float, int]],
    metrics: Sequence[str],
) -> dict[str, set[int]]:
    """Row indices with the highest mean per metric (every metric here: higher is better)."""
    best: dict[str, set[int]] = {}
    for metric in metrics:
        means = [summary.get((m, metric), (math.nan, 0, 0))[0] for m in methods]
        finite = [v for v in means if np.isfinite(v)]
        if finite:
            top = max(finite)
            best[metric] = {i for i, v in enumerate(means) if np.isfinite(v) and v == top}
    return best


def _markdown(frame: pd.DataFrame, bold: Mapping[str, set[int]], metrics: Sequence[str]) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = [str(v) for v in row]
        for j, metric in enumerate(metrics):
            if i in bold.get(metric, set()):
                cells[2 + j] = f"**{cells[2 + j]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL: dict[str, str] = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape the LaTeX special characters of a table cell (one character at a time)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex(
    frame: pd.DataFrame, bold: Mapping[str, set[int]], metrics: Sequence[str], caption: str
) -> str:
    cols = list(frame.columns)
    lines = [
        "% Generated by fusion3d.evaluation.write_table1; needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(caption)}}}".replace(" +- ", " $\\pm$ "),
        "\\begin{tabular}{ll" + "c" * (len(cols) - 2) + "}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in cols) + " \\\\",
        "\\midrule",
    ]
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = [latex_escape(str(v)).replace(" +- ", " $\\pm$ ") for v in row]
        for j, metric in enumerate(metrics):
            if i in bold.get(metric, set()):
                cells[2 + j] = f"\\textbf{{{cells[2 + j]}}}"
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def write_table1(
    long: pd.DataFrame,
    out_prefix: str | os.PathLike,
    *,
    split: str | None = "test",
    protocol: str = "paper",
    metrics: Sequence[str] = PAPER_METRICS,
    reference: str = "dcfb3d",
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write :func:`table1` as ``<out_prefix>.csv``, ``.md`` (GitHub) and ``.tex`` (booktabs).

    ``notes`` are further sentences for the Markdown notes and the LaTeX caption (e.g.
    where the diagnostic probe's results are).

    In the Markdown and LaTeX versions the best mean per metric is bold. Under the
    ``paper`` protocol with an ``fsim`` column, :data:`PAPER_FMI_NOTE` (which column
    stands for the paper's "FMI", and why) follows the Markdown table and ends the
    LaTeX caption. All three files are written atomically.

    Returns
    -------
    dict
        ``{"csv": path, "md": path, "tex": path}``.
    """
    metrics = list(metrics)
    frame = table1(long, split=split, protocol=protocol, metrics=metrics, reference=reference)
    methods, summary = _summary(
        average_over_seeds(long),
        split=split,
        protocol=protocol,
        metrics=metrics,
        reference=reference,
    )
    bold = _best_rows(methods, summary, metrics)
    shown = _with_seed_spread(frame, metrics)
    n_subjects = _select(long, split=split, protocol=protocol)["subject_id"].nunique()
    caption = (
        f"Fusion metrics, {split or 'all'} split, protocol {protocol}, "
        f"mean +- sample std over {n_subjects} subjects; best mean in bold."
    )
    seeds_note = SEEDS_NOTE if shown is not frame else ""
    if seeds_note:
        caption = f"{caption} {seeds_note}"
    note = PAPER_FMI_NOTE if protocol == "paper" and "fsim" in metrics else ""
    if note:
        caption = f"{caption} {note}"
    reach = table1_reach_note(n_subjects, split)
    if reach:
        caption = f"{caption} {reach}"
    for extra in notes:
        caption = f"{caption} {extra}"
    prefix = str(out_prefix)
    paths = {ext: Path(f"{prefix}.{ext}") for ext in ("csv", "md", "tex")}
    with atomic_path(paths["csv"]) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(paths["md"]) as tmp:
        note_md = "".join(f"\n{n}\n" for n in (seeds_note, reach, note, *notes) if n)
        tmp.write_text(_markdown(shown, bold, metrics) + note_md, encoding="utf-8")
    with atomic_path(paths["tex"]) as tmp:
        tmp.write_text(_latex(shown, bold, metrics, caption), encoding="utf-8")
    return paths


def table1_reach_note(n_subjects: int, split: str | None = "test", alpha: float = ALPHA) -> str:
    """Table 1's note when no paired test of its ``n_subjects`` can reach ``alpha`` ('' else)."""
    floor = min_attainable_p(n_subjects)
    if not math.isfinite(floor) or floor < alpha:
        return ""
    return (
        f"With {n_subjects} {split or 'all'} subject{'s' if n_subjects != 1 else ''} the paired two-sided Wilcoxon test of a "
        f"method against the reference cannot give p below {floor:.3g} (2 / 2^{n_subjects}): "
        f"no difference in this table can be significant at {alpha:g} (wilcoxon_holm.tsv)."
    )


def _with_seed_spread(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Table 1 for reading: each metric cell followed by ``(sd across seeds)`` where there is
    one; the seed columns dropped. ``frame`` itself when it has no seed columns."""
    if "Seeds" not in frame.columns:
        return frame
    shown = frame.copy()
    for metric in metrics:
        label, extra = metric_name(metric), seed_column(metric)
        shown[label] = [
            f"{cell} ({sd})" if sd else cell
            for cell, sd in zip(shown[label], shown[extra], strict=True)
        ]
    return shown.drop(columns=[seed_column(m) for m in metrics])


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values (NaN entries stay NaN, not counted).

    With the ``m`` finite p-values sorted ascending, ``p_(1) <= ... <= p_(m)``,
    the adjusted value is ``max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"pvalues: must lie in [0, 1], got {p[finite].tolist()}")
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


PAIRED_COLUMNS: tuple[str, ...] = (
    "protocol",
    "metric",
    "method",
    "reference",
    "n",
    "median_method",
    "median_reference",
    "median_diff",
    "statistic",
    "p",
    "p_holm",
    "min_p",
    "note",
)


def min_attainable_p(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with ``n``
    non-zero paired differences: every difference of one sign, ``2 / 2**n`` (0.125 at n = 4,
    0.0625 at n = 5, 0.03125 at n = 6). NaN for n < 1."""
    return 2.0 ** (1 - int(n)) if n >= 1 else math.nan


def reach_note(n: int, alpha: float = ALPHA) -> str:
    """What the paired test cannot show at ``n`` pairs ('' when p < ``alpha`` is attainable)."""
    floor = min_attainable_p(n)
    if not math.isfinite(floor) or floor < alpha:
        return ""
    return (
        f"n={n}: the smallest attainable p is {floor:.3g} (exact two-sided Wilcoxon), "
        f"so no difference can reach p < {alpha:g}"
    )


def _wilcoxon(diff: np.ndarray, min_n: int) -> tuple[float, float, str]:
    """Two-sided Wilcoxon signed-rank test on paired differences -> (statistic, p, note)."""
    if diff.size < min_n:
        return math.nan, math.nan, f"n={diff.size} < {min_n}: too few paired subjects"
    if np.all(diff == 0):
        return math.nan, math.nan, "all differences are zero"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.wilcoxon(diff, alternative="two-sided", zero_method="wilcox")
    except (ValueError, FloatingPointError) as exc:
        return math.nan, math.nan, f"wilcoxon failed: {exc}"
    statistic, p = float(res.statistic), float(res.pvalue)
    if not np.isfinite(p):
        return statistic, math.nan, "wilcoxon returned no p-value"
    n_zero = int(np.sum(diff == 0))
    return statistic, p, (f"{n_zero} zero differences dropped" if n_zero else "")


def paired_tests(
    long: pd.DataFrame,
    *,
    reference: str = "dcfb3d",
    split: str | None = "test",
    min_n: int = 2,
) -> pd.DataFrame:
    """Paired two-sided Wilcoxon signed-rank tests of every method against ``reference``.

    For each protocol, metric and method other than ``reference``, subjects
    with a finite value for both are paired; ``median_diff`` is the median of
    ``method - reference`` (negative: the reference scores higher). ``p_holm``
    is Holm-corrected within each (protocol, metric) family. Where the test
    cannot run (fewer than ``min_n`` pairs, all differences zero) ``p`` is NaN
    and ``note`` says why. ``min_p`` is the smallest p the test can give with ``n``
    pairs (:func:`min_attainable_p`, over the non-zero differences); when it is not
    below :data:`ALPHA`, ``note`` says that no difference can reach significance.
    A network's value per subject is its mean over seeds.

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`PAIRED_COLUMNS` (empty when the reference is absent).
    """
    sel = _select(average_over_seeds(long), split=split)
    sel = sel[np.isfinite(sel["value"].astype(float))]
    rows: list[dict[str, object]] = []
    for (protocol, metric), fam in sel.groupby(["protocol", "metric"], sort=True):
        wide = fam.pivot_table(index="subject_id", columns="method", values="value", aggfunc="mean")
        if reference not in wide.columns:
            continue
        family: list[dict[str, object]] = []
        for method in method_order(wide.columns, reference):
            if method == reference:
                continue
            pair = wide[[method, reference]].dropna()
            diff = (pair[method] - pair[reference]).to_numpy(dtype=float)
            statistic, p, note = _wilcoxon(diff, min_n)
            family.append(
                {
                    "protocol": protocol,
                    "metric": metric,
                    "method": method,
                    "reference": reference,
                    "n": int(diff.size),
                    "median_method": float(pair[method].median()) if diff.size else math.nan,
                    "median_reference": float(pair[reference].median()) if diff.size else math.nan,
                    "median_diff": float(np.median(diff)) if diff.size else math.nan,
                    "statistic": statistic,
                    "p": p,
                    "min_p": min_attainable_p(int(np.count_nonzero(diff))),
                    "note": "; ".join(
                        x for x in (note, reach_note(int(np.count_nonzero(diff)))) if x
                    ),
                }
            )
        adjusted = holm([r["p"] for r in family])
        for r, padj in zip(family, adjusted, strict=True):
            r["p_holm"] = float(padj)
        rows.extend(family)
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def group_breakdown(long: pd.DataFrame, split: str | None = "test") -> pd.DataFrame:
    """Mean, sample std and n per method, protocol, metric and diagnostic group.

    Returns
    -------
    pandas.DataFrame
        Columns ``method``, ``protocol``, ``metric``, ``group``, ``mean``, ``std``, ``n``.
    """
    sel = _select(average_over_seeds(long), split=split)
    sel = sel[np.isfinite(sel["value"].astype(float))]
    cols = ["method", "protocol", "metric", "group", "mean", "std", "n"]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    out = (
        sel.groupby(["method", "protocol", "metric", "group"], sort=True)["value"]
        .agg(
            mean="mean",
            std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
            n="size",
        )
        .reset_index()
    )
    out["n"] = out["n"].astype(int)
    return out[cols]
