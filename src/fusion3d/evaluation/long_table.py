"""The long metric table (one row per subject, method, protocol and metric; columns
:data:`LONG_COLUMNS`, plus ``seed``) and the helpers every summary of it shares.

Seeds: a network trained with several seeds has one row per seed (column ``seed``; empty for
a classic method). Every summary first averages each subject's value over the seeds
(:func:`average_over_seeds`), so the mean +- sd over subjects, the paired tests and the group
breakdown all use one seed-averaged value per subject and method; Table 1 gives beside it
the sd across seeds of the test-set mean (:func:`seed_spread`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from fusion3d.methods import BY_NAME
from fusion3d.metrics.names import METRIC_LABELS

LONG_COLUMNS: tuple[str, ...] = (
    "subject_id",
    "split",
    "group",
    "method",
    "protocol",
    "metric",
    "value",
)


#: The significance level that the notes of the paired tests and Table 1 refer to.
ALPHA = 0.05


def method_name(method: str) -> str:
    """Display name of ``method`` (the key itself when unknown)."""
    return BY_NAME[method].label if method in BY_NAME else method


def metric_name(metric: str) -> str:
    """Display name of a metric key."""
    return METRIC_LABELS.get(metric, metric.upper())


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
    sel = select_rows(long, split=split, protocol=protocol)
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


def check_columns(frame: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` naming the missing columns of ``frame``."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; has {list(frame.columns)}")


def select_rows(
    long: pd.DataFrame, *, split: str | None, protocol: str | None = None
) -> pd.DataFrame:
    """Rows of ``long`` in ``split`` (all when ``None``) and ``protocol`` (all when ``None``)."""
    check_columns(long, LONG_COLUMNS, "metrics table")
    sel = long
    if split is not None:
        sel = sel[sel["split"] == split]
    if protocol is not None:
        sel = sel[sel["protocol"] == protocol]
    return sel
