"""The paper's Table 1 beside ours: per method and metric, our value and its 95 % CI next to
the value the DC2Fusion paper reports.

The paper's values (:data:`PAPER_TABLE1`) are its Table 1 (MRI-PET, ADNI test set, mean +- sd
over test images; ``../shared/PAPER.md`` of the project, from the paper). Its "FMI" column is
compared with our ``fsim`` (the published evaluation code's FSIM; see
:data:`fusion3d.evaluation.tables.PAPER_FMI_NOTE`). Ours: the ``paper`` protocol on the test split,
each subject's value averaged over the network's seeds, then the mean over subjects with a
Student-t 95 % confidence interval of that mean.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from scipy import stats

from fusion3d.evaluation.long_table import average_over_seeds, method_name, seed_spread, select_rows
from fusion3d.io import atomic_path

__all__ = [
    "COMPARISON_COLUMNS",
    "PAPER_METRICS",
    "PAPER_TABLE1",
    "compare_with_paper",
    "write_comparison",
]

#: Our metric key for each column of the paper's Table 1.
PAPER_METRICS: dict[str, str] = {"PSNR": "psnr", "SSIM": "ssim", "NMI": "nmi", "FMI": "fsim"}

#: The paper's Table 1: method -> paper column -> (mean, sd).
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "swinfuse": {
        "PSNR": (14.102, 1.490),
        "SSIM": (0.623, 0.020),
        "NMI": (1.275, 0.019),
        "FMI": (0.817, 0.009),
    },
    "matr": {
        "PSNR": (15.997, 1.190),
        "SSIM": (0.658, 0.035),
        "NMI": (1.451, 0.009),
        "FMI": (0.795, 0.018),
    },
    "dilran": {
        "PSNR": (19.028, 0.821),
        "SSIM": (0.690, 0.033),
        "NMI": (1.301, 0.015),
        "FMI": (0.806, 0.019),
    },
    "dcfb3d": {
        "PSNR": (20.714, 1.377),
        "SSIM": (0.718, 0.033),
        "NMI": (1.312, 0.012),
        "FMI": (0.807, 0.020),
    },
}

COMPARISON_COLUMNS = (
    "method",
    "label",
    "metric",
    "paper_column",
    "paper_mean",
    "paper_sd",
    "ours_mean",
    "ours_sd",
    "ours_ci_low",
    "ours_ci_high",
    "ours_seed_sd",
    "n_subjects",
    "n_seeds",
    "paper_in_ci",
)


def _mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, sd, low, high)``: Student-t interval of the mean (NaN bounds for n < 2)."""
    n = values.size
    if n == 0:
        return (math.nan,) * 4
    mean = float(np.mean(values))
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def compare_with_paper(long: pd.DataFrame, *, split: str | None = "test") -> pd.DataFrame:
    """One row per method of the paper's Table 1 that this study ran, and per paper column.

    Parameters
    ----------
    long : DataFrame
        The study's long metrics table (with a ``seed`` column for the networks).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COMPARISON_COLUMNS`, in the paper's row and column order.
    """
    avg = select_rows(average_over_seeds(long), split=split, protocol="paper")
    spread = seed_spread(long, split=split, protocol="paper")
    rows = []
    for method, paper_row in PAPER_TABLE1.items():
        if method not in set(avg["method"]):
            continue
        for column, metric in PAPER_METRICS.items():
            vals = avg[(avg["method"] == method) & (avg["metric"] == metric)]["value"]
            vals = vals.astype(float).to_numpy()
            vals = vals[np.isfinite(vals)]
            mean, sd, low, high = _mean_ci(vals)
            seed_sd, n_seeds = spread.get((method, metric), (math.nan, 1))
            p_mean, p_sd = paper_row[column]
            rows.append(
                {
                    "method": method,
                    "label": method_name(method),
                    "metric": metric,
                    "paper_column": column,
                    "paper_mean": p_mean,
                    "paper_sd": p_sd,
                    "ours_mean": mean,
                    "ours_sd": sd,
                    "ours_ci_low": low,
                    "ours_ci_high": high,
                    "ours_seed_sd": seed_sd,
                    "n_subjects": int(vals.size),
                    "n_seeds": int(n_seeds),
                    "paper_in_ci": bool(low <= p_mean <= high) if np.isfinite(low) else False,
                }
            )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def comparison_markdown(table: pd.DataFrame) -> str:
    """The comparison as a Markdown table: one row per method, paper | ours [95 % CI] per column."""
    columns = list(PAPER_METRICS)
    lines = [
        "| Method | " + " | ".join(f"{c} paper | {c} ours [95 % CI]" for c in columns) + " |",
        "|---|" + "---|---|" * len(columns),
    ]
    for _method, part in table.groupby("method", sort=False):
        cells = [str(part["label"].iloc[0])]
        by_col = part.set_index("paper_column")
        for c in columns:
            if c not in by_col.index:
                cells += ["n/a", "n/a"]
                continue
            r = by_col.loc[c]
            cells.append(f"{r['paper_mean']:.3f} +- {r['paper_sd']:.3f}")
            ci = (
                f" [{r['ours_ci_low']:.3f}, {r['ours_ci_high']:.3f}]"
                if np.isfinite(r["ours_ci_low"])
                else ""
            )
            cells.append(f"{r['ours_mean']:.3f}{ci}")
        lines.append("| " + " | ".join(cells) + " |")
    n = int(table["n_subjects"].max()) if len(table) else 0
    seeds = int(table["n_seeds"].max()) if len(table) else 1
    note = (
        f"\nPaper: its Table 1 (mean +- sd). Ours: the paper protocol on {n} test subjects, each "
        f"subject's value averaged over {seeds} seed(s); mean and Student-t 95 % CI of the mean. "
        "The paper's FMI is compared with our FSIM (the published evaluation code's fsim).\n"
    )
    return "\n".join(lines) + "\n" + note


def write_comparison(
    long: pd.DataFrame, tsv: str | os.PathLike, md: str | os.PathLike
) -> pd.DataFrame:
    """Write :func:`compare_with_paper` as a TSV and a Markdown table (atomically)."""
    table = compare_with_paper(long)
    with atomic_path(tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(md) as tmp:
        tmp.write_text(comparison_markdown(table), encoding="utf-8")
    return table
