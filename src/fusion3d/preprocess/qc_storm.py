"""The QC storm stop: a bound that flags a large share of the cohort stops the study.

A bound that flags most of a cohort is more likely miscalibrated for the data than right
about most subjects (issue 38: the PET -> T1 mutual information floor flagged every real FDG
scan). With ``on_flag: exclude`` such a bound would silently empty the split, so the
``qc_table`` step stops instead, with a message that names the bound, its figure's cohort
distribution and the key to change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusion3d.preprocess.qc import FLAG_KEYS

#: A storm needs at least this many flagged subjects (one or two flagged subjects of a tiny
#: cohort are not a storm, whatever their share).
STORM_MIN_FLAGGED = 3


class QCStormError(RuntimeError):
    """One QC bound flagged more than ``preprocess.qc.storm_share`` of the cohort."""


def _distribution(values: pd.Series) -> str:
    """``min / median / max`` (and quartiles) of a figure over the cohort."""
    x = pd.to_numeric(values, errors="coerce").dropna()
    if x.empty:
        return "no values"
    q = np.percentile(x, [0, 25, 50, 75, 100])
    return "min {:.4g}, q1 {:.4g}, median {:.4g}, q3 {:.4g}, max {:.4g}".format(*q) + (
        f" (n = {len(x)})"
    )


def _key_of(flag_name: str, kind: str) -> str:
    """The setting behind a flag (the cohort check's flags share ``cohort_max_z``)."""
    if kind == "cohort":
        return "preprocess.qc.cohort_max_z"
    return FLAG_KEYS.get(flag_name, "preprocess.qc.bounds")


def storm_message(flag_name: str, group: pd.DataFrame, qc_table: pd.DataFrame, share: float) -> str:
    """The storm message of one flag (its rows of ``flags.tsv`` in ``group``)."""
    n_flagged, n = group["subject_id"].nunique(), len(qc_table)
    first = group.iloc[0]
    figure, bound, kind = str(first["figure"]), str(first["bound"]), str(first["kind"])
    if figure in qc_table.columns:
        values = qc_table[figure]
    else:  # a figure that is not a qc.tsv column: the flagged values only
        values = group["value"]
    key = _key_of(flag_name, kind)
    return (
        f"QC storm: the {kind} bound {flag_name} ({figure} {bound}) flagged {n_flagged} of {n} "
        f"subjects ({100 * n_flagged / n:.0f} % > preprocess.qc.storm_share {100 * share:.0f} %). "
        f"The bound looks miscalibrated for this data, and excluding the flagged subjects would "
        f"empty the study. {figure} over the cohort: {_distribution(values)}. Check a few "
        f"subjects' QC figures (results/qc/, results/preprocess/*/*_qc.png); if they are "
        f"sound, change {key} (or set preprocess.qc.storm_share, or on_flag: keep)."
    )


def qc_storms(qc_table: pd.DataFrame, flags: pd.DataFrame, share: float) -> list[str]:
    """The storm message of every flag that flags more than ``share`` of the cohort.

    ``qc_table`` and ``flags`` are the tables of :func:`fusion3d.preprocess.qc.collect_qc`.
    A flag storms when its subjects number at least :data:`STORM_MIN_FLAGGED` and more than
    ``share`` of ``qc_table``'s subjects.
    """
    if not 0 < share <= 1:
        raise ValueError(f"preprocess.qc.storm_share must be in (0, 1], got {share}")
    if flags.empty or qc_table.empty:
        return []
    out = []
    for name, group in flags.groupby("flag", sort=True):
        n_flagged = group["subject_id"].nunique()
        if n_flagged >= STORM_MIN_FLAGGED and n_flagged > share * len(qc_table):
            out.append(storm_message(str(name), group, qc_table, share))
    return out


def check_storm(qc_table: pd.DataFrame, flags: pd.DataFrame, share: float, on_flag: str) -> list:
    """Raise :class:`QCStormError` on a storm when ``on_flag`` is "exclude"; else return them.

    With ``on_flag: keep`` nobody is excluded, so a storm is returned (for a log warning)
    instead of stopping the study.
    """
    storms = qc_storms(qc_table, flags, share)
    if storms and on_flag == "exclude":
        raise QCStormError(" | ".join(storms))
    return storms
