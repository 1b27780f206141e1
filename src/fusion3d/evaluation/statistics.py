"""Paired statistics of the long table: Wilcoxon signed-rank tests of each method against the
reference with Holm's correction (:func:`paired_tests`), what the test can reach at a given n
(:func:`reach_note`), and the breakdown by diagnostic group (:func:`group_breakdown`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from fusion3d.evaluation.long_table import (
    ALPHA,
    average_over_seeds,
    method_order,
    select_rows,
)


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
    sel = select_rows(average_over_seeds(long), split=split)
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
    sel = select_rows(average_over_seeds(long), split=split)
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
