"""Tests of fusion3d.ingest.select and fusion3d.ingest.clinical: preferences, pairing, groups."""

import pandas as pd
import pytest

from fusion3d.ingest import clinical
from fusion3d.ingest.select import (
    DEFAULT_FDG_PREFERENCE,
    DEFAULT_T1_PREFERENCE,
    Candidate,
    is_tracer,
    normalise_description,
    pet_rec_label,
    preference_rank,
    select_subject,
    t1_rank,
)

P = "002_S_0295"


def t1(image, date, desc="MPRAGE", visit=""):
    return Candidate(
        f"I{image}", P, "t1", desc, pd.Timestamp(date), t1_rank(desc, DEFAULT_T1_PREFERENCE), visit
    )


def fdg(image, date, desc=DEFAULT_FDG_PREFERENCE[0], visit=""):
    return Candidate(
        f"I{image}",
        P,
        "fdg",
        desc,
        pd.Timestamp(date),
        (preference_rank(desc, DEFAULT_FDG_PREFERENCE),),
        visit,
    )


def test_folder_and_csv_forms_normalise_equal():
    assert normalise_description(
        "MPR__GradWarp__B1_Correction__N3__Scaled"
    ) == normalise_description("MPR; GradWarp; B1 Correction; N3; Scaled")
    assert normalise_description("Coreg,_Avg") == "coreg, avg"


def test_t1_preference_order_and_nd():
    scaled = t1_rank("MPR; GradWarp; B1 Correction; N3; Scaled", DEFAULT_T1_PREFERENCE)
    n3m = t1_rank("MT1; GradWarp; N3m", DEFAULT_T1_PREFERENCE)
    raw = t1_rank("mprage", DEFAULT_T1_PREFERENCE)
    repeat = t1_rank("MPRAGE_Repeat", DEFAULT_T1_PREFERENCE)
    nd = t1_rank("Accelerated_Sagittal_MPRAGE_ND", DEFAULT_T1_PREFERENCE)
    assert scaled < n3m < raw < repeat < nd and nd[0] is True
    assert t1_rank("Axial FLAIR", DEFAULT_T1_PREFERENCE) is None


def test_best_t1_chosen_at_same_visit():
    cands = [
        t1(1, "2012-01-01", "MPRAGE"),
        t1(2, "2012-01-01", "MPR; GradWarp; B1 Correction; N3; Scaled"),
        fdg(3, "2012-01-10"),
    ]
    pairs, excluded = select_subject(cands)
    assert pairs[0].mri.image_id == "I2"
    assert excluded == {"I1": "lower-preference T1 at the same visit (chose I2)"}


def test_nd_never_chosen_when_another_exists():
    cands = [
        t1(1, "2012-01-01", "Accelerated Sagittal MPRAGE_ND"),
        t1(2, "2012-01-01", "MPRAGE Repeat"),
        fdg(3, "2012-01-10"),
    ]
    assert select_subject(cands)[0][0].mri.image_id == "I2"
    assert select_subject([cands[0], cands[2]])[0][0].mri.image_id == "I1"


def test_fdg_preference_and_tracers():
    assert is_tracer("AV45 Coreg, Avg, Std Img and Vox Siz, Uniform Resolution")
    assert is_tracer("FBB Co-registered Dynamic") and is_tracer("AV1451 Coreg, Avg")
    assert not is_tracer(DEFAULT_FDG_PREFERENCE[0])
    ranks = [
        preference_rank(d, DEFAULT_FDG_PREFERENCE)
        for d in (
            "Coreg,_Avg,_Std_Img_and_Vox_Siz,_Uniform_Resolution",
            "Co-registered, Averaged",
            "Co-registered Dynamic",
            "ADNI Brain PET: Raw FDG",
        )
    ]
    assert ranks == sorted(ranks)
    assert pet_rec_label(DEFAULT_FDG_PREFERENCE[0]) == "coregiso"
    assert pet_rec_label("Co-registered, Averaged") == "coregavg"
    assert pet_rec_label("Co-registered Dynamic") == "coregdyn"


def test_closest_dates_within_limit():
    cands = [t1(1, "2012-01-01"), fdg(2, "2012-03-01"), fdg(3, "2012-01-20")]
    pairs, excluded = select_subject(cands, visits="all")
    assert [(p.mri.image_id, p.pet.image_id, p.days_apart) for p in pairs] == [("I1", "I3", 19)]
    assert excluded["I2"] == "its T1 candidates were paired with closer FDG PET scans"


def test_same_visit_code_preferred_over_closer_date():
    cands = [
        t1(1, "2012-01-01", visit="2"),
        fdg(2, "2012-01-05", visit="1"),
        fdg(3, "2012-02-20", visit="2"),
    ]
    assert select_subject(cands)[0][0].pet.image_id == "I3"


def test_no_fdg_within_limit():
    cands = [t1(1, "2012-01-01"), fdg(2, "2013-01-01")]
    pairs, excluded = select_subject(cands, max_days_apart=180)
    assert pairs == []
    assert excluded == {"I1": "no FDG PET within 180 days", "I2": "no T1 within 180 days"}


def test_no_t1_and_no_fdg_for_subject():
    assert select_subject([fdg(2, "2012-01-01")])[1] == {"I2": "no T1 for this subject"}
    assert select_subject([t1(1, "2012-01-01")])[1] == {"I1": "no FDG PET for this subject"}


def test_baseline_versus_all_visits():
    cands = [t1(1, "2013-01-01"), fdg(2, "2013-01-10"), t1(3, "2012-01-01"), fdg(4, "2012-01-03")]
    pairs, excluded = select_subject(cands, visits="baseline")
    assert [(p.mri.image_id, p.pet.image_id) for p in pairs] == [("I3", "I4")]
    assert excluded == dict.fromkeys(["I1", "I2"], "follow-up visit (visits=baseline)")
    pairs, excluded = select_subject(cands, visits="all")
    assert len(pairs) == 2 and excluded == {}
    with pytest.raises(ValueError, match="visits"):
        select_subject(cands, visits="some")


@pytest.mark.parametrize(
    ("raw", "group"),
    [
        ("CN", "CN"),
        ("SMC", "CN"),
        ("EMCI", "MCI"),
        ("LMCI", "MCI"),
        ("MCI", "MCI"),
        ("AD", "AD"),
        ("Dementia", "AD"),
        ("Patient", None),
        ("", None),
    ],
)
def test_group_mapping(raw, group):
    assert clinical.map_group(raw) == group


def _adnimerge():
    return pd.DataFrame(
        {
            "PTID": [P, P],
            "VISCODE": ["bl", "m12"],
            "EXAMDATE": pd.to_datetime(["2012-01-05", "2013-01-03"]),
            "DX": ["", "Dementia"],
            "DX_bl": ["LMCI", "LMCI"],
            "AGE": ["70.0", "70.0"],
            "PTGENDER": ["Female", "Female"],
            "IMAGEUID": ["", "999"],
        }
    )


def test_diagnosis_from_adnimerge_dx_then_dx_bl_then_csv():
    rows = _adnimerge()
    bl = clinical.visit_row(rows, pd.Timestamp("2012-01-01"))
    assert clinical.diagnosis(bl, "CN") == ("MCI", "LMCI")
    m12 = clinical.visit_row(rows, pd.Timestamp("2012-06-01"), ("I999",))
    assert clinical.diagnosis(m12, "CN") == ("AD", "Dementia")
    far = clinical.visit_row(rows, pd.Timestamp("2016-01-01"))
    assert far is None and clinical.diagnosis(far, "EMCI") == ("MCI", "EMCI")


def test_sessions_from_viscode_or_months():
    assert clinical.viscode_session("bl") == "ses-M000"
    assert clinical.viscode_session("m06") == "ses-M006"
    assert clinical.viscode_session("y1") is None
    first = pd.Timestamp("2012-01-01")
    assert clinical.months_session(pd.Timestamp("2012-01-01"), first) == "ses-M000"
    assert clinical.months_session(pd.Timestamp("2012-07-20"), first) == "ses-M006"
    assert clinical.months_session(pd.Timestamp("2013-02-10"), first) == "ses-M012"


def test_sex_and_age_fallback_to_adnimerge():
    rows = _adnimerge()
    row = rows.iloc[1]
    assert clinical.sex_and_age("", "", row, rows) == ("F", "71.0")
    assert clinical.sex_and_age("M", "72.25", row, rows) == ("M", "72.2")
