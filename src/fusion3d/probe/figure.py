"""Figures of the probe: the AUC of every feature set with its 95 % CI, and the ROC curves."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fusion3d.probe.classify import REFERENCES, TASKS
from fusion3d.report.figures import OutSpec, save_figure

_REFERENCE_COLOUR = "#444444"
_KIND_COLOUR = {"reference": _REFERENCE_COLOUR, "network": "#1f77b4", "classic": "#ff7f0e"}
#: ROC curves of the references: grey to black, the T1's GM volumes dash-dotted, both
#: side-by-side sets solid.
_REFERENCE_STYLE = {
    "t1": {"color": "0.6", "ls": "--"},
    "t1vol": {"color": "0.45", "ls": "-."},
    "pet": {"color": "0.3", "ls": "--"},
    "t1_pet": {"color": "black", "ls": "-"},
    "t1vol_pet": {"color": "0.35", "ls": "-"},
}


def _message_figure(text: str) -> Figure:
    fig = Figure(figsize=(7.5, 2.4))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 90)), ha="center", va="center", fontsize=10)
    return fig


def probe_auc_figure(table: pd.DataFrame) -> Figure:
    """One panel per task: each feature set's AUC (dot) and 95 % CI (bar); chance at 0.5,
    the reference's AUC dashed. A task without numbers shows its reason instead."""
    tasks = list(dict.fromkeys(table["task"]))
    if not tasks:
        return _message_figure("The probe has no task.")
    n_rows = int((table["task"] == tasks[0]).sum())
    fig = Figure(figsize=(4.6 * len(tasks) + 1.8, 0.32 * n_rows + 1.6))
    axes = fig.subplots(1, len(tasks), sharey=True, squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=True):
        part = table[table["task"] == task].reset_index(drop=True)
        y = np.arange(len(part))[::-1]
        ax.set_yticks(y, part["label"])
        ax.set_title(f"{task.replace('_', ' ')}\n{part['n_per_class'].iloc[0]}", fontsize=9)
        if (part["status"] != "ok").all():
            ax.text(
                0.5,
                0.5,
                "\n".join(textwrap.wrap(str(part["reason"].iloc[0]), 40)),
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
            )
            ax.set_xlim(0, 1)
            continue
        colours = [_KIND_COLOUR.get(k, "#2ca02c") for k in part["kind"]]
        auc = part["auc"].to_numpy(float)
        err = np.vstack(
            [auc - part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float) - auc]
        )
        for yi, a, lo, hi, c in zip(y, auc, err[0], err[1], colours, strict=True):
            ax.errorbar(a, yi, xerr=[[lo], [hi]], fmt="o", color=c, ms=4, capsize=2, lw=1)
        ax.axvline(0.5, color="0.6", lw=0.8, ls=":")
        ref = part[part["method"] == part["reference"].iloc[0]]
        if not ref.empty:
            ax.axvline(float(ref["auc"].iloc[0]), color=_REFERENCE_COLOUR, lw=0.8, ls="--")
        for yi, (p, lab) in enumerate(zip(part["p_holm"], part["method"], strict=True)):
            if lab != part["reference"].iloc[0] and np.isfinite(p) and p < 0.05:
                ax.text(1.01, y[yi], "*", transform=ax.get_yaxis_transform(), va="center")
        lo_x = min(0.3, float(np.nanmin(part["ci_low"])) - 0.02)
        ax.set_xlim(lo_x, 1.03)  # room for an AUC of 1 and its CI
        ax.set_xlabel("ROC AUC (95 % bootstrap CI)")
        ax.grid(axis="x", lw=0.3)
    reference = str(table["reference"].iloc[0])
    volumes = " (the T1 also by regional GM volumes)" if (table["method"] == "t1vol").any() else ""
    title = (
        f"Diagnosis kept by each image: cross-validated AUC of regional means{volumes} "
        f"(dotted: chance; dashed: the reference, {REFERENCES.get(reference, reference)}; "
        "*: Holm p < 0.05 vs the reference)"
    )
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 13)), fontsize=9)
    fig.tight_layout()
    return fig


def probe_roc_figure(scores: pd.DataFrame, table: pd.DataFrame) -> Figure:
    """ROC curves of the first binary task that has numbers: the references in grey/black,
    every method in colour (a network's first seed), from the subjects' out-of-fold scores."""
    from sklearn.metrics import roc_curve

    ok = table[table["status"] == "ok"]
    binary = [t for t in dict.fromkeys(ok["task"]) if len(TASKS[t]) == 2]
    if not binary:
        reason = table["reason"].dropna()
        return _message_figure(
            "No ROC curve: "
            + (str(reason.iloc[0]) if not reason.empty else "no binary task was probed.")
        )
    task = binary[0]
    negative, positive = TASKS[task]
    part = scores[scores["task"] == task]
    fig = Figure(figsize=(6.2, 5.4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    rows = ok[ok["task"] == task]
    first_seed = rows.groupby("method")["seed"].transform(
        lambda s: s.min() if s.notna().any() else np.nan
    )
    shown = rows[rows["seed"].isna() | (rows["seed"] == first_seed)]
    cmap = [f"C{i}" for i in range(10)]
    colour_i = 0
    for row in shown.itertuples(index=False):
        key = _feature_key(row.method, row.seed)
        s = part[part["features"] == key]
        fpr, tpr, _ = roc_curve((s["label"] == positive).astype(int), s["score"])
        if row.method in REFERENCES:
            style = {**_REFERENCE_STYLE[row.method], "lw": 2.0}
        else:
            style = {"color": cmap[colour_i % 10], "lw": 1.1}
            colour_i += 1
        ax.plot(fpr, tpr, label=f"{row.label}: {row.auc:.2f}", **style)
    ax.set_xlabel(f"false positive rate ({negative} called {positive})")
    ax.set_ylabel(f"true positive rate ({positive} found)")
    ax.set_title(
        f"{task.replace('_', ' ')}: out-of-fold ROC curves ({rows['n_per_class'].iloc[0]})",
        fontsize=9,
    )
    ax.legend(fontsize=6.5, loc="lower right", title="AUC", title_fontsize=7)
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def plot_probe(
    table: pd.DataFrame, scores: pd.DataFrame, auc_out: OutSpec, roc_out: OutSpec
) -> None:
    """Write both probe figures (PNG and/or PDF paths, as :func:`fusion3d.report.figures.output_paths`)."""
    save_figure(probe_auc_figure(table), auc_out)
    save_figure(probe_roc_figure(scores, table), roc_out)


def _feature_key(method: str, seed) -> str:
    """The feature set of a probe table row: a reference's name, else ``<method>/<run>``."""
    from fusion3d.methods import run_name

    if method in REFERENCES:
        return method
    return f"{method}/{run_name(None if pd.isna(seed) else int(seed))}"
