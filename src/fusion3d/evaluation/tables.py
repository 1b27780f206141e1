"""Table 1: mean +- sd over the test subjects of every method and metric, with the seed
columns, in Markdown, CSV and LaTeX (:func:`write_table1`)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.evaluation.long_table import (
    ALPHA,
    average_over_seeds,
    method_name,
    method_order,
    metric_name,
    seed_spread,
    select_rows,
)
from fusion3d.evaluation.statistics import min_attainable_p
from fusion3d.io import atomic_path
from fusion3d.methods import BY_NAME
from fusion3d.metrics.names import TABLE1_METRICS

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
    sel = select_rows(long, split=split, protocol=protocol)
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


def _table1_parts(
    long: pd.DataFrame,
    *,
    split: str | None,
    protocol: str,
    metrics: Sequence[str],
    reference: str,
) -> tuple[pd.DataFrame, list[str], dict[tuple[str, str], tuple[float, float, int]]]:
    """:func:`table1`'s frame with the method order and summary it was computed from."""
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
    return pd.DataFrame(rows, columns=columns), methods, summary


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
    return _table1_parts(
        long, split=split, protocol=protocol, metrics=list(metrics), reference=reference
    )[0]


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
        "% Generated by fusion3d.evaluation.tables.write_table1; needs \\usepackage{booktabs}.",
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
    out: Mapping[str, str | os.PathLike],
    *,
    split: str | None = "test",
    protocol: str = "paper",
    metrics: Sequence[str] = PAPER_METRICS,
    reference: str = "dcfb3d",
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write :func:`table1` to ``out["csv"]``, ``out["md"]`` (GitHub) and ``out["tex"]``
    (booktabs): the rule's declared outputs.

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
    frame, methods, summary = _table1_parts(
        long, split=split, protocol=protocol, metrics=metrics, reference=reference
    )
    bold = _best_rows(methods, summary, metrics)
    shown = _with_seed_spread(frame, metrics)
    n_subjects = select_rows(long, split=split, protocol=protocol)["subject_id"].nunique()
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
    missing = [ext for ext in ("csv", "md", "tex") if ext not in out]
    if missing:
        raise ValueError(f"write_table1: no output path for {missing}")
    paths = {ext: Path(out[ext]) for ext in ("csv", "md", "tex")}
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
