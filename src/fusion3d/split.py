"""Seeded, subject-level, diagnosis-stratified train/val/test split.

The paper split 90/10 at random with no seed and no validation set; here the split is a file,
reproducible from its seed, made per participant (all visits of a participant land in the same
split) and stratified by diagnosis so every split sees every group in proportion.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fusion3d.io import write_tsv

SPLITS = ("train", "val", "test")


def allocate(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Split ``n`` items into counts proportional to ``fractions`` (largest remainder).

    Every split with a positive fraction gets at least one item when ``n`` allows it, taken from
    the largest split, so a small stratum still contributes to validation and test.
    """
    raw = {name: n * fractions[name] for name in SPLITS}
    counts = {name: int(np.floor(raw[name])) for name in SPLITS}
    order = sorted(SPLITS, key=lambda name: (-(raw[name] - counts[name]), SPLITS.index(name)))
    for name in order[: n - sum(counts.values())]:
        counts[name] += 1
    wanted = [name for name in SPLITS if fractions[name] > 0]
    if n >= len(wanted):
        for name in wanted:
            if counts[name] == 0:
                donor = max(SPLITS, key=lambda other: counts[other])
                counts[donor] -= 1
                counts[name] += 1
    return counts


def make_split(
    subjects: pd.DataFrame,
    *,
    seed: int,
    fractions: Mapping[str, float],
    stratify: str = "group",
    excluded: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Assign every subject (row) to train, val or test.

    Parameters
    ----------
    subjects
        One row per image pair with at least ``subject_id``, ``participant_id`` and ``group``.
    seed
        Seed of the permutation; the same table and seed always give the same split.
    fractions
        ``{"train": f, "val": f, "test": f}`` adding up to 1.
    stratify
        ``"group"`` to split each diagnosis group separately, ``"none"`` for a plain split.
    excluded
        ``subject_id -> reason`` for subjects that must not be used (e.g. failed QC); they get
        the split ``"excluded"`` and the reason.

    Returns
    -------
    pandas.DataFrame
        The input columns plus ``split`` and ``split_reason``, sorted by subject_id.
    """
    for column in ("subject_id", "participant_id", "group"):
        if column not in subjects.columns:
            raise ValueError(f"subject table lacks the column {column!r}")
    missing = [name for name in SPLITS if name not in fractions]
    if missing:
        raise ValueError(f"split fractions lack {', '.join(missing)}")
    if any(float(fractions[name]) < 0 for name in SPLITS):
        raise ValueError("split fractions must not be negative")
    total = sum(float(fractions[name]) for name in SPLITS)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions add up to {total:g}, not 1")
    if stratify not in ("group", "none"):
        raise ValueError(f"stratify must be 'group' or 'none', not {stratify!r}")
    excluded = dict(excluded or {})

    table = subjects.sort_values("subject_id").reset_index(drop=True).copy()
    table["split"] = ""
    table["split_reason"] = ""
    for sid, reason in excluded.items():
        mask = table["subject_id"] == sid
        table.loc[mask, "split"] = "excluded"
        table.loc[mask, "split_reason"] = reason

    usable = table[table["split"] == ""]
    # One entry per participant: the group of their first (sorted) pair decides the stratum.
    participants = usable.groupby("participant_id", sort=True)["group"].first()
    strata = (
        participants.groupby(participants).groups
        if stratify == "group"
        else {"all": participants.index}
    )
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for stratum in sorted(strata):
        members = np.array(sorted(strata[stratum]))
        members = members[rng.permutation(len(members))]
        counts = allocate(len(members), fractions)
        start = 0
        for name in SPLITS:
            for participant in members[start : start + counts[name]]:
                assignment[str(participant)] = name
            start += counts[name]
    usable_mask = table["split"] == ""
    table.loc[usable_mask, "split"] = table.loc[usable_mask, "participant_id"].map(assignment)
    return table


def write_split(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the split table atomically (tab-separated)."""
    write_tsv(table, path)
