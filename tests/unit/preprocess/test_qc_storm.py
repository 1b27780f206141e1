"""The QC storm stop (issue 38): one bound flagging most of the cohort stops the study."""

from __future__ import annotations

import pandas as pd
import pytest

from fusion3d.preprocess import collect_qc, qc
from fusion3d.preprocess.qc_storm import QCStormError, check_storm, qc_storms


def _record(sid: str, mi: float) -> dict:
    rec = {
        "subject_id": sid,
        "mask_volume_ml": 1400.0,
        "registration": {
            "t1_to_mni": {"similarity_before": 0.3, "similarity_after": 0.6},
            "pet_to_t1": {"similarity_before": 0.03, "similarity_after": mi},
        },
        "suvr": {"reference_value": 1.0, "reference_voxels": 500},
    }
    rec["flags"] = qc.evaluate_flags(rec, {**qc.DEFAULT_BOUNDS, "min_pet_mi": 0.15})
    return rec


def _tables(tmp_path, mis):
    paths = []
    for i, mi in enumerate(mis):
        path = tmp_path / f"s{i}_qc.json"
        qc.write_json(_record(f"s{i}", mi), path)
        paths.append(path)
    return collect_qc(paths)


def test_a_cohort_whose_every_subject_trips_one_bound_stops(tmp_path):
    # real FDG under the former floor of 0.15 nats: every subject flagged
    table, flags = _tables(tmp_path, [0.066, 0.108, 0.111, 0.110, 0.09, 0.1])
    with pytest.raises(QCStormError) as err:
        check_storm(table, flags, 0.3, "exclude")
    msg = str(err.value)
    assert "QC storm" in msg and "pet_to_t1_similarity" in msg
    assert "6 of 6 subjects" in msg and "miscalibrated" in msg
    assert "pet_to_t1_after" in msg and "median 0.104" in msg and "min 0.066" in msg
    assert "preprocess.qc.bounds.min_pet_mi" in msg and "storm_share" in msg


def test_a_share_below_the_storm_share_does_not_stop(tmp_path):
    table, flags = _tables(tmp_path, [0.1, 0.1, 0.1] + [0.3] * 7)  # 30 % flagged, not more
    assert (flags["flag"] == "pet_to_t1_similarity").sum() == 3  # (and 3 cohort outliers)
    assert check_storm(table, flags, 0.3, "exclude") == []
    stricter = qc_storms(table, flags, 0.25)  # a stricter share does storm
    assert any("pet_to_t1_similarity" in m for m in stricter)


def test_keep_warns_instead_of_stopping(tmp_path):
    table, flags = _tables(tmp_path, [0.1] * 4)
    storms = check_storm(table, flags, 0.3, "keep")
    assert len(storms) == 1 and "pet_to_t1_similarity" in storms[0]


def test_two_flagged_subjects_are_no_storm(tmp_path):
    table, flags = _tables(tmp_path, [0.1, 0.1])  # 100 %, but a storm needs 3
    assert check_storm(table, flags, 0.3, "exclude") == []


def test_a_cohort_bound_storm_names_cohort_max_z():
    table = pd.DataFrame({"subject_id": list("abcd"), "mask_volume_ml": [1, 2, 3, 4]})
    flags = pd.DataFrame(
        [
            {
                "subject_id": s,
                "kind": "cohort",
                "flag": "mask_volume_ml_cohort_outlier",
                "figure": "mask_volume_ml",
                "value": 1,
                "bound": "in [1, 2]",
                "reason": "x",
            }
            for s in "abc"
        ]
    )
    (msg,) = qc_storms(table, flags, 0.3)
    assert "preprocess.qc.cohort_max_z" in msg and "3 of 4" in msg


def test_storm_share_out_of_range_is_an_error():
    empty = pd.DataFrame(columns=list(qc.FLAG_COLUMNS))
    with pytest.raises(ValueError, match="storm_share"):
        qc_storms(pd.DataFrame({"subject_id": ["a"]}), empty, 0.0)
