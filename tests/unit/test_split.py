"""The split: seeded, subject-level, stratified, and honest about exclusions."""

from __future__ import annotations

import pandas as pd
import pytest

from fusion3d.split import make_split

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def cohort(n_per_group=(10, 5, 5), visits=1) -> pd.DataFrame:
    rows = []
    k = 0
    for group, n in zip(("CN", "MCI", "AD"), n_per_group, strict=True):
        for _ in range(n):
            for v in range(visits):
                rows.append(
                    {
                        "subject_id": f"sub-ADNI{k:03d}S0001_ses-M{12 * v:03d}",
                        "participant_id": f"sub-ADNI{k:03d}S0001",
                        "group": group,
                    }
                )
            k += 1
    return pd.DataFrame(rows)


def test_same_seed_same_split_other_seed_differs():
    a = make_split(cohort(), seed=1, fractions=FRACTIONS)
    b = make_split(cohort().sample(frac=1, random_state=5), seed=1, fractions=FRACTIONS)
    c = make_split(cohort(), seed=2, fractions=FRACTIONS)
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()


def test_stratified_counts_per_group():
    table = make_split(cohort(), seed=0, fractions=FRACTIONS)
    counts = table.groupby(["group", "split"]).size().unstack(fill_value=0)
    assert counts.loc["CN"].to_dict() == {"test": 2, "train": 6, "val": 2}
    assert counts.loc["AD"].to_dict() == {"test": 1, "train": 3, "val": 1}
    assert counts.loc["MCI"].to_dict() == {"test": 1, "train": 3, "val": 1}


def test_visits_of_one_participant_stay_together():
    table = make_split(cohort(visits=3), seed=0, fractions=FRACTIONS)
    assert (table.groupby("participant_id")["split"].nunique() == 1).all()


def test_excluded_subjects_are_kept_with_their_reason():
    data = cohort()
    sid = data["subject_id"].iloc[0]
    table = make_split(data, seed=0, fractions=FRACTIONS, excluded={sid: "QC: empty brain mask"})
    row = table[table["subject_id"] == sid].iloc[0]
    assert row["split"] == "excluded" and row["split_reason"] == "QC: empty brain mask"
    assert (table["split"] != "").all()


def test_small_cohort_gets_val_and_test_without_stratification():
    table = make_split(
        cohort((2, 1, 1)),
        seed=0,
        fractions={"train": 0.5, "val": 0.25, "test": 0.25},
        stratify="none",
    )
    assert table["split"].value_counts().to_dict() == {"train": 2, "val": 1, "test": 1}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fractions": {"train": 0.5, "val": 0.2, "test": 0.2}}, "add up to"),
        ({"fractions": {"train": 0.8, "val": 0.2}}, "lack test"),
        ({"fractions": FRACTIONS, "stratify": "sex"}, "stratify"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_split(cohort(), seed=0, **kwargs)


def test_missing_column_raises():
    with pytest.raises(ValueError, match="group"):
        make_split(cohort().drop(columns="group"), seed=0, fractions=FRACTIONS)
