"""End-to-end tests of fusion3d.ingest.run_ingest / plan_ingest on a tiny fake download."""

import json
from pathlib import Path

import fixtures_adni as fx  # noqa: E402
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fusion3d.ingest import ManifestError, plan_ingest, run_ingest  # noqa: E402
from fusion3d.ingest.cohort import IncompleteCohortError  # noqa: E402
from fusion3d.ingest.run import (  # noqa: E402
    PAIRS_COLUMNS,
    NoPairsError,
    resolve_options,
    summarise_reasons,
)
from fusion3d.io import read_tsv  # noqa: E402

S1, S2, S3 = "002_S_0295", "011_S_0002", "022_S_0003"


def _download(root: Path) -> tuple[Path, Path, Path]:
    dl = root / "download"
    rows = []
    # S1: best FDG has a missing slice -> falls back to the next FDG step; lower T1 at the visit.
    rows += fx.add_subject(dl, S1, t1_id=101, pet_id=102)
    bad = [p for p in dl.rglob("*_I102.dcm")]
    sorted(bad)[1].unlink()
    fx.write_nifti_image(dl, ptid=S1, description="MPRAGE", image_id=100, date="2012-01-20")
    rows.append(fx.manifest_row(100, S1, "MPRAGE", "2012-01-20"))
    fx.write_dicom_series(dl, ptid=S1, description="Co-registered, Averaged", image_id=103)
    rows.append(fx.manifest_row(103, S1, "Co-registered, Averaged", "2012-01-31", modality="PET"))
    rows.append(
        fx.manifest_row(104, S1, "AV45 Co-registered, Averaged", "2012-02-01", modality="PET")
    )
    # S2: baseline and a follow-up a year later.
    rows += fx.add_subject(
        dl, S2, t1_id=201, pet_id=202, t1_date="2011-03-01", pet_date="2011-03-10"
    )
    rows += fx.add_subject(
        dl, S2, t1_id=203, pet_id=204, t1_date="2012-03-01", pet_date="2012-03-02"
    )
    # S3: T1 only on disk; its FDG is listed but was not downloaded.
    fx.write_nifti_image(dl, ptid=S3, description=fx.T1_DESC, image_id=301, date="2013-05-05")
    rows.append(fx.manifest_row(301, S3, fx.T1_DESC, "2013-05-05", group="AD"))
    rows.append(fx.manifest_row(302, S3, fx.FDG_DESC, "2013-05-06", modality="PET"))
    manifest = fx.write_manifest(dl / "COLLECTION_1_1_2024.csv", rows)
    adnimerge = dl / "ADNIMERGE.csv"
    pd.DataFrame(
        {
            "RID": ["295", "2"],
            "PTID": [S1, S2],
            "VISCODE": ["bl", "bl"],
            "EXAMDATE": ["2012-01-22", "2011-03-02"],
            "DX_bl": ["EMCI", "LMCI"],
            "DX": ["", "Dementia"],
            "AGE": ["70", "80"],
            "PTGENDER": ["Male", "Female"],
            "IMAGEUID": ["", ""],
        }
    ).to_csv(adnimerge, index=False)
    return dl, manifest, adnimerge


def _run(tmp_path, **kw):
    dl, manifest, adnimerge = _download(tmp_path)
    out = tmp_path / "results"
    pairs = run_ingest(
        download_dir=dl,
        manifests=[manifest],
        adnimerge=adnimerge,
        bids_dir=out / "bids",
        pairs_tsv=out / "ingest/pairs.tsv",
        excluded_tsv=out / "ingest/excluded.tsv",
        **kw,
    )
    return dl, out, pairs


def test_run_ingest_pairs_exclusions_and_bids(tmp_path):
    dl, out, pairs = _run(tmp_path, options={"relative_to": str(tmp_path)})
    table = read_tsv(out / "ingest/pairs.tsv", dtype=str, keep_default_na=False)
    assert tuple(table.columns) == PAIRS_COLUMNS
    assert table[
        ["ptid", "mri_image_id", "pet_image_id", "group", "group_raw", "session_id"]
    ].values.tolist() == [
        [S1, "I101", "I103", "MCI", "EMCI", "ses-M000"],
        [S2, "I201", "I202", "AD", "Dementia", "ses-M000"],
    ]
    assert table["participant_id"].tolist() == ["sub-ADNI002S0295", "sub-ADNI011S0002"]
    assert table["days_apart"].tolist() == ["11", "9"]
    assert (
        table["mri_path"][0]
        == "results/bids/sub-ADNI002S0295/ses-M000/anat/sub-ADNI002S0295_ses-M000_T1w.nii.gz"
    )
    assert table["pet_path"][0].endswith(
        "pet/sub-ADNI002S0295_ses-M000_trc-18FFDG_rec-coregavg_pet.nii.gz"
    )
    for rel in list(table["mri_path"]) + list(table["pet_path"]):
        assert nib.load(tmp_path / rel).ndim == 3
    sidecar = json.loads((tmp_path / table["pet_path"][0].replace(".nii.gz", ".json")).read_text())
    assert sidecar["SourceImageID"] == "I103" and sidecar["AcquisitionDate"] == "2012-01-31"
    excluded = read_tsv(out / "ingest/excluded.tsv", dtype=str).set_index("image_id")["reason"]
    assert excluded["I100"] == "lower-preference T1 at the same visit (chose I101)"
    assert excluded["I102"].startswith("unusable image: missing slice")
    assert excluded["I104"] == "amyloid/tau tracer"
    assert excluded["I203"] == excluded["I204"] == "follow-up visit (visits=baseline)"
    assert excluded["I301"] == "no FDG PET for this subject"
    assert excluded["I302"] == "file not found under download_dir"
    assert len(excluded) + 2 * len(table) == 11  # every manifest image accounted for once
    assert (out / "bids/dataset_description.json").exists()
    participants = read_tsv(out / "bids/participants.tsv")
    assert participants["participant_id"].tolist() == ["sub-ADNI002S0295", "sub-ADNI011S0002"]
    assert not list(out.rglob("*.part*"))


def test_visits_all_and_absolute_paths(tmp_path):
    _, out, pairs = _run(tmp_path, options={"visits": "all"}, threads=2)
    s2 = pairs[pairs["ptid"] == S2]
    assert s2["session_id"].tolist() == ["ses-M000", "ses-M012"]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in pairs["mri_path"])


def test_all_candidates_broken_leaves_subject_out(tmp_path):
    dl, manifest, adnimerge = _download(tmp_path)
    for f in dl.rglob("*_I103.dcm"):
        f.write_bytes(b"")
    out = tmp_path / "r"
    pairs = run_ingest(
        download_dir=dl,
        manifests=manifest,
        bids_dir=out / "bids",
        pairs_tsv=out / "p.tsv",
        excluded_tsv=out / "e.tsv",
    )
    assert S1 not in set(pairs["ptid"]) and S2 in set(pairs["ptid"])
    excluded = read_tsv(out / "e.tsv", dtype=str).set_index("image_id")["reason"]
    assert excluded["I103"].startswith("unusable image: zero-byte file")
    assert excluded["I101"] == "no FDG PET for this subject"


def test_bad_manifest_fails_before_conversion(tmp_path):
    dl, _, _ = _download(tmp_path)
    bad = fx.write_manifest(tmp_path / "bad.csv", [], header=("Image Data ID", "Subject"))
    with pytest.raises(ManifestError, match="bad.csv.*'Modality'"):
        run_ingest(
            download_dir=dl,
            manifests=[bad],
            bids_dir=tmp_path / "b",
            pairs_tsv=tmp_path / "p.tsv",
            excluded_tsv=tmp_path / "e.tsv",
        )
    assert not (tmp_path / "b").exists()


def test_plan_ingest_reads_no_pixels(tmp_path):
    dl, manifest, _ = _download(tmp_path)
    plan = plan_ingest(download_dir=dl, manifests=[manifest])
    # the broken FDG is still the planned choice: plans do not read pixel data
    assert plan.pairs[S1][0].pet.image_id == "I102"
    assert {r["image_id"] for r in plan.excluded} == {"I104", "I302"}


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="unknown ingest option.*colour"):
        resolve_options({"colour": 1})
    with pytest.raises(ValueError, match="max_days_apart"):
        resolve_options({"max_days_apart": -1})


def _cohort_file(path, ids):
    path.write_text(",".join(ids) + "\n")
    return path


def test_cohort_incomplete_raises_and_writes_missing(tmp_path):
    dl, manifest, _ = _download(tmp_path)
    cohort = _cohort_file(tmp_path / "ids.csv", ["I101", "I103", "I302", "I999"])
    missing_tsv = tmp_path / "missing.tsv"
    with pytest.raises(IncompleteCohortError, match="4 images expected, 2 found, 2 missing"):
        run_ingest(
            download_dir=dl,
            manifests=manifest,
            bids_dir=tmp_path / "b",
            pairs_tsv=tmp_path / "p.tsv",
            excluded_tsv=tmp_path / "e.tsv",
            cohort_ids=cohort,
            missing_tsv=missing_tsv,
        )
    missing = read_tsv(missing_tsv, dtype=str).set_index("image_id")["reason"].to_dict()
    assert missing == {"I302": "in CSV but no file", "I999": "not in any collection CSV"}
    assert not (tmp_path / "p.tsv").exists()


def test_cohort_allow_incomplete_restricts_to_cohort(tmp_path):
    dl, manifest, _ = _download(tmp_path)
    cohort = _cohort_file(tmp_path / "ids.csv", ["101", "103", "I302", "I999"])
    pairs = run_ingest(
        download_dir=dl,
        manifests=manifest,
        bids_dir=tmp_path / "b",
        pairs_tsv=tmp_path / "p.tsv",
        excluded_tsv=tmp_path / "e.tsv",
        cohort_ids=cohort,
        options={"allow_incomplete_cohort": True},
    )
    assert pairs[["mri_image_id", "pet_image_id"]].values.tolist() == [["I101", "I103"]]
    excluded = read_tsv(tmp_path / "e.tsv", dtype=str).set_index("image_id")["reason"]
    assert excluded["I201"].startswith("not in cohort list")
    assert (tmp_path / "missing.tsv").exists()
    np.testing.assert_equal(len(excluded) + 2, 11)


def test_no_pair_keeps_reasons_beside_the_log_and_counts_them(tmp_path):
    dl = tmp_path / "download"
    rows = []
    for k, ptid in enumerate((S1, S2, S3)):  # three subjects with a T1 and no FDG
        fx.write_nifti_image(dl, ptid=ptid, description=fx.T1_DESC, image_id=10 + k)
        rows.append(fx.manifest_row(10 + k, ptid, fx.T1_DESC, "2012-01-31"))
    fx.write_dicom_series(dl, ptid=S1, description=fx.FDG_DESC, image_id=20, shape=(4, 4, 3))
    for path in dl.rglob("*_I20.dcm"):
        path.write_bytes(b"")  # S1's only FDG is broken
    rows.append(fx.manifest_row(20, S1, fx.FDG_DESC, "2012-01-31", modality="PET"))
    rows.append(fx.manifest_row(21, S2, "AV45 Coreg, Avg", "2012-01-31", modality="PET"))
    manifest = fx.write_manifest(dl / "COLLECTION_1_1_2024.csv", rows)
    out, logs = tmp_path / "results" / "ingest", tmp_path / "results" / "logs" / "ingest"
    with pytest.raises(NoPairsError) as err:
        run_ingest(
            download_dir=dl,
            manifests=[manifest],
            bids_dir=tmp_path / "results" / "bids",
            pairs_tsv=out / "pairs.tsv",
            excluded_tsv=out / "excluded.tsv",
            keep_dir=logs,
            require_pairs=True,
        )
    message = str(err.value)
    assert message.startswith("no T1 + FDG pair found among 5 images")
    # counts per reason kind: S2's and S3's T1 have no FDG; S1's T1 loses its only FDG
    assert "3 no FDG PET for this subject; 1 amyloid/tau tracer; 1 unusable image" in message
    assert message.endswith(f"every image and its reason: {logs / 'excluded.tsv'}")
    kept = read_tsv(logs / "excluded.tsv", dtype=str)
    assert kept.equals(read_tsv(out / "excluded.tsv", dtype=str))
    assert kept.set_index("image_id")["reason"]["I20"].startswith("unusable image: zero-byte")
    assert len(kept) == 5  # every image accounted for


def test_reason_summary_names_the_most_frequent_kinds():
    excluded = pd.DataFrame(
        {"reason": ["b (x)", "a: y", "b (z)", "c", "d", "a: w", "b"], "image_id": range(7)}
    )
    assert summarise_reasons(excluded) == "3 b; 2 a; 1 c; 1 d"
    assert summarise_reasons(excluded, limit=2) == "3 b; 2 a; 2 for 2 other reason(s)"


def test_dicom_named_by_instance_number_ingested_through_its_folder(tmp_path):
    dl, manifest, adnimerge = _download(tmp_path)
    for k, path in enumerate(sorted(dl.rglob("*_I202.dcm"))):  # S2's FDG, leaf folder I202
        path.rename(path.with_name(f"{k + 1}.dcm"))
    out = tmp_path / "results"
    pairs = run_ingest(
        download_dir=dl,
        manifests=[manifest],
        adnimerge=adnimerge,
        bids_dir=out / "bids",
        pairs_tsv=out / "pairs.tsv",
        excluded_tsv=out / "excluded.tsv",
    )
    s2 = pairs[pairs["ptid"] == S2]
    assert s2[["mri_image_id", "pet_image_id"]].values.tolist() == [["I201", "I202"]]
    sidecar = Path(s2["pet_path"].iloc[0].replace(".nii.gz", ".json"))
    assert json.loads(sidecar.read_text())["SourceFileCount"] == len(list(dl.rglob("*/I202/*")))
