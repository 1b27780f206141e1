"""cohort.source bids: a BIDS dataset in, pairs.tsv and a validator-clean results/bids out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fusion3d.ingest import bids
from fusion3d.ingest.bids_source import (
    clinica_rec_label,
    plan_bids,
    ptid_of,
    run_bids_ingest,
)
from fusion3d.ingest.select import DEFAULT_FDG_PREFERENCE
from fusion3d.ingest.sources import BidsInputError, bids_inputs

VALIDATOR = Path(sys.executable).parent / "bids-validator-deno"


def _nifti(path: Path, seed: int, frames: int = 0) -> None:
    rng = np.random.default_rng(seed)
    shape = (12, 12, 10) + ((frames,) if frames else ())
    data = (rng.random(shape) * 100 + 1).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _tsv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)


def make_dataset(root: Path, subjects: dict, diagnosis_column: str = "diagnosis") -> Path:
    """``subjects``: ``{label: {session: [(relative name, sidecar)], "dx": {session: label}}}``."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    people = []
    for k, (sub, spec) in enumerate(sorted(subjects.items())):
        people.append({"participant_id": f"sub-{sub}", "sex": "F"})
        rows = []
        for ses, images in spec.items():
            if ses == "dx":
                continue
            for j, (name, sidecar) in enumerate(images):
                folder = "anat" if name.endswith("T1w") else "pet"
                stem = f"sub-{sub}_{ses}_{name}"
                _nifti(root / f"sub-{sub}" / ses / folder / f"{stem}.nii.gz", 10 * k + j)
                if sidecar is not None:
                    path = root / f"sub-{sub}" / ses / folder / f"{stem}.json"
                    path.write_text(json.dumps(sidecar))
            rows.append({"session_id": ses, diagnosis_column: spec.get("dx", {}).get(ses, "CN")})
        _tsv(root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", rows)
    _tsv(root / "participants.tsv", people)
    return root


FDG = ("trc-18FFDG_rec-coregavg_pet", {"TracerName": "FDG", "Units": "Bq/mL"})
T1 = ("T1w", {})


def _run(source: Path, tmp_path: Path, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path / "out"
    pairs = run_bids_ingest(
        source_dir=source,
        bids_dir=out / "bids",
        pairs_tsv=out / "pairs.tsv",
        excluded_tsv=out / "excluded.tsv",
        **kwargs,
    )
    return pairs, pd.read_csv(out / "excluded.tsv", sep="\t", dtype=str)


def _reason(excluded: pd.DataFrame, fragment: str) -> str:
    hits = excluded[excluded["image_id"].str.contains(fragment, regex=False)]["reason"]
    assert len(hits) == 1, excluded.to_string()
    return hits.iloc[0]


def test_good_dataset_pairs_every_subject(tmp_path):
    src = make_dataset(
        tmp_path / "src",
        {"01": {"ses-M000": [T1, FDG], "dx": {"ses-M000": "AD"}}, "02": {"ses-M000": [T1, FDG]}},
    )
    pairs, excluded = _run(src, tmp_path)
    assert list(pairs["participant_id"]) == ["sub-01", "sub-02"]
    assert list(pairs["group"]) == ["AD", "CN"]
    assert list(pairs["mri_date"]) == ["n/a", "n/a"]  # no acq_time anywhere
    assert excluded.empty
    for path in pairs["pet_path"]:
        assert Path(path).is_file()
        sidecar = json.loads(bids.sidecar_path(Path(path)).read_text())
        assert sidecar["TracerName"] == "FDG" and sidecar["Manufacturer"] == "n/a"
        assert "InjectedRadioactivity" in sidecar["FieldsNotInSource"]


def test_no_dataset_description_is_a_named_error(tmp_path):
    src = make_dataset(tmp_path / "src", {"01": {"ses-M000": [T1, FDG]}})
    (src / "dataset_description.json").unlink()
    with pytest.raises(BidsInputError, match=r"dataset_description.json: missing"):
        _run(src, tmp_path)
    with pytest.raises(BidsInputError, match="dataset_description.json"):
        bids_inputs({"cohort": {"bids_dir": str(src)}})
    with pytest.raises(BidsInputError, match="cohort.bids_dir is required"):
        bids_inputs({"cohort": {"bids_dir": None}})


def test_pet_without_t1_is_excluded_and_the_rest_go_on(tmp_path):
    src = make_dataset(tmp_path / "src", {"01": {"ses-M000": [FDG]}, "02": {"ses-M000": [T1, FDG]}})
    pairs, excluded = _run(src, tmp_path)
    assert list(pairs["participant_id"]) == ["sub-02"]
    assert _reason(excluded, "sub-01_ses-M000_trc-18FFDG") == "no T1 for this subject"


def test_two_fdg_in_a_session_pick_by_rec_then_run(tmp_path):
    iso = ("trc-18FFDG_rec-coregiso8_pet", {"TracerName": "FDG"})
    run1 = ("trc-18FFDG_rec-coregavg_run-1_pet", {"TracerName": "FDG"})
    run2 = ("trc-18FFDG_rec-coregavg_run-2_pet", {"TracerName": "FDG"})
    src = make_dataset(
        tmp_path / "src",
        {"01": {"ses-M000": [T1, FDG, iso]}, "02": {"ses-M000": [T1, run2, run1]}},
    )
    pairs, excluded = _run(src, tmp_path)
    chosen = dict(zip(pairs["participant_id"], pairs["pet_image_id"], strict=True))
    assert "rec-coregiso8" in chosen["sub-01"]  # Uniform Resolution first in fdg_preference
    assert "run-1" in chosen["sub-02"]
    reason = _reason(excluded, "sub-01_ses-M000_trc-18FFDG_rec-coregavg")
    assert reason.startswith("lower-preference FDG PET at the same visit (chose ")
    assert "rec-coregiso8" in reason
    assert "run-1" in _reason(excluded, "run-2")


def test_participants_without_the_diagnosis_column_is_a_named_error(tmp_path):
    src = make_dataset(tmp_path / "src", {"01": {"ses-M000": [T1, FDG]}}, "dx_bl")
    with pytest.raises(BidsInputError, match=r"participants.tsv: no column 'diagnosis'"):
        _run(src, tmp_path)
    pairs, _ = _run(src, tmp_path, diagnosis_column="dx_bl")
    assert len(pairs) == 1


def test_unknown_diagnosis_label_is_an_exclusion_row(tmp_path):
    src = make_dataset(
        tmp_path / "src",
        {
            "01": {"ses-M000": [T1, FDG], "dx": {"ses-M000": "Alzheimer"}},
            "02": {"ses-M000": [T1, FDG]},
        },
    )
    pairs, excluded = _run(src, tmp_path)
    assert list(pairs["participant_id"]) == ["sub-02"]
    assert _reason(excluded, "sub-01_ses-M000_T1w") == (
        "unknown diagnosis label 'Alzheimer' (not a key of cohort.diagnosis_map)"
    )
    pairs, _ = _run(src, tmp_path, diagnosis_map={"Alzheimer": "AD", "CN": "CN"})
    assert list(pairs["group"]) == ["AD", "CN"]


def test_other_tracers_are_excluded_with_the_tracer(tmp_path):
    av45 = ("trc-18FAV45_rec-coregavg_pet", {})
    untagged = ("rec-coregavg_pet", {"TracerName": "florbetapir"})
    src = make_dataset(tmp_path / "src", {"01": {"ses-M000": [T1, FDG, av45, untagged]}})
    pairs, excluded = _run(src, tmp_path)
    assert len(pairs) == 1
    assert _reason(excluded, "trc-18FAV45") == "tracer 18FAV45 is not FDG"
    assert _reason(excluded, "sub-01_ses-M000_rec-coregavg") == "tracer florbetapir is not FDG"


def test_undated_sessions_pair_within_a_session_baseline_first(tmp_path):
    src = make_dataset(
        tmp_path / "src", {"01": {"ses-M000": [T1], "ses-M012": [T1, FDG], "ses-M024": [FDG]}}
    )
    pairs, excluded = _run(src, tmp_path)
    assert list(pairs["session_id"]) == ["ses-M012"]
    assert _reason(excluded, "ses-M000_T1w").startswith("no FDG PET within")
    assert _reason(excluded, "ses-M024").startswith("no T1 within")


def test_dates_from_scans_tsv_pair_across_sessions(tmp_path):
    src = make_dataset(tmp_path / "src", {"01": {"ses-M000": [T1], "ses-M003": [FDG]}})
    for ses, day in (("ses-M000", "2010-01-01"), ("ses-M003", "2010-03-01")):
        names = [
            p.relative_to(src / "sub-01" / ses).as_posix()
            for p in (src / "sub-01" / ses).glob("*/*.nii.gz")
        ]
        _tsv(
            src / "sub-01" / ses / f"sub-01_{ses}_scans.tsv",
            [{"filename": n, "acq_time": f"{day}T10:00:00"} for n in names],
        )
    pairs, _ = _run(src, tmp_path, options={"visits": "all"})
    assert list(pairs["days_apart"]) == [59]
    assert list(pairs["session_id"]) == ["ses-M000"]


def test_names_follow_clinica():
    assert ptid_of("ADNI011S0002") == "011_S_0002" and ptid_of("01") == "01"
    labels = [clinica_rec_label(d) for d in DEFAULT_FDG_PREFERENCE]
    assert labels == ["coregiso8", "coregiso6", "coregstd", "coregavg", "coregdyn", "raw"]


def test_plan_reads_no_pixels(tmp_path):
    src = make_dataset(tmp_path / "src", {"01": {"ses-M000": [T1, FDG]}})
    for path in src.glob("**/*.nii.gz"):
        path.write_bytes(b"")  # an indexer that opened the images would fail here
    plan = plan_bids(src)
    assert sorted(c.kind for c in plan.candidates["sub-01"]) == ["fdg", "t1"]


def validator_errors(dataset: Path) -> list[dict]:
    """The official BIDS validator's errors on ``dataset`` (bids-validator-deno on deno)."""
    result = subprocess.run(
        [str(VALIDATOR), "--format", "json", str(dataset)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.stdout.strip(), f"validator printed nothing: {result.stderr[-2000:]}"
    issues = json.loads(result.stdout)["issues"]["issues"]
    return [i for i in issues if i["severity"] == "error"]


def test_validator_accepts_the_ingested_tree(tmp_path):
    dyn = (
        "trc-18FFDG_rec-coregdyn_pet",
        {"TracerName": "FDG", "FrameDuration": [300] * 3, "FrameTimesStart": [0, 300, 600]},
    )
    src = make_dataset(
        tmp_path / "src", {"01": {"ses-M000": [T1, FDG]}, "02": {"ses-M000": [T1, dyn]}}
    )
    _nifti(src / "sub-02/ses-M000/pet/sub-02_ses-M000_trc-18FFDG_rec-coregdyn_pet.nii.gz", 5, 3)
    pairs, _ = _run(src, tmp_path)
    assert len(pairs) == 2
    sidecar = json.loads(bids.sidecar_path(Path(pairs["pet_path"][1])).read_text())
    assert sidecar["FrameDuration"] == [900.0] and sidecar["FrameTimesStart"] == [0]
    assert sidecar["SourceFrameDuration"] == [300] * 3
    errors = validator_errors(tmp_path / "out" / "bids")
    assert errors == [], [(e["code"], e.get("subCode"), e.get("location")) for e in errors]


def test_validator_finds_errors_in_a_bare_pet_sidecar(tmp_path):
    """The check above can fail: the same tree with a sidecar lacking the PET keys does."""
    src = make_dataset(tmp_path / "src", {"01": {"ses-M000": [T1, FDG]}})
    _run(src, tmp_path)
    out = tmp_path / "out" / "bids"
    (pet,) = out.glob("**/*_pet.json")
    pet.write_text(json.dumps({"TracerName": "FDG"}))
    codes = {e["code"] for e in validator_errors(out)}
    assert "SIDECAR_KEY_REQUIRED" in codes
    shutil.rmtree(out)


def test_validator_accepts_the_preprocessing_derivative(tmp_path):
    from fusion3d.ingest.derivative import write_derivative
    from fusion3d.preprocess.outputs import SUFFIXES, subject_file

    src = make_dataset(tmp_path / "src", {"01": {"ses-M000": [T1, FDG]}})
    pairs, _ = _run(src, tmp_path)
    subject = "sub-01_ses-M000"
    folder = tmp_path / "out" / "preprocess" / subject
    for k, key in enumerate(SUFFIXES):
        path = subject_file(folder, subject, key)
        if path.name.endswith(".nii.gz"):
            _nifti(path, 100 + k)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}" if key == "qc_json" else "x")
    out = write_derivative(
        tmp_path / "out" / "pairs.tsv",
        folder.parent,
        tmp_path / "out" / "derivatives" / "pre",
        raw_bids="../../bids",
    )
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["SourceDatasets"]
    assert (out / "sub-01" / "ses-M000" / "pet").is_dir()
    errors = validator_errors(out)
    assert errors == [], [(e["code"], e.get("subCode"), e.get("location")) for e in errors]
