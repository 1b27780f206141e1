"""The synthetic cohort written as Clinica's adni-to-bids output gives what the IDA path gives."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from fixtures_bids import write_clinica_bids  # noqa: E402

from fusion3d.ingest import run_ingest  # noqa: E402
from fusion3d.ingest.bids_source import run_bids_ingest  # noqa: E402
from fusion3d.preprocess import preprocess_pair  # noqa: E402
from fusion3d.synthetic import generate_cohort, t1_grid_override  # noqa: E402
from fusion3d.synthetic.anatomy import T1Grid  # noqa: E402

SMALL_GRID = T1Grid(shape=(96, 96, 80), zooms=(2.5, 2.5, 2.4))
FAST = {
    "brain_extraction": "ants",
    "registration_mm": 4.0,
    "mni_resolution_mm": 3.0,
    "grid": 32,
    "qc_bounds": {"min_pet_mi": 0.05, "min_mni_ncc": 0.6},
}
KEYS = ["participant_id", "session_id", "group", "mri_date", "pet_date", "days_apart"]


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory):
    """The IDA path on a synthetic download, and the BIDS path on its Clinica-layout copy."""
    root = tmp_path_factory.mktemp("clinica")
    with t1_grid_override(SMALL_GRID):
        generate_cohort(root / "synthetic", n_subjects=3, seed=5)
    download = root / "synthetic" / "download"
    manifests = sorted(
        p for p in download.glob("*.csv") if p.name not in ("ADNIMERGE.csv", "cohort_image_ids.csv")
    )
    run_ingest(
        download_dir=download,
        manifests=manifests,
        adnimerge=download / "ADNIMERGE.csv",
        cohort_ids=download / "cohort_image_ids.csv",
        bids_dir=root / "ida" / "bids",
        pairs_tsv=root / "ida" / "pairs.tsv",
        excluded_tsv=root / "ida" / "excluded.tsv",
    )
    clinica = write_clinica_bids(download, manifests, download / "ADNIMERGE.csv", root / "in")
    run_bids_ingest(
        source_dir=clinica,
        bids_dir=root / "bids" / "bids",
        pairs_tsv=root / "bids" / "pairs.tsv",
        excluded_tsv=root / "bids" / "excluded.tsv",
    )
    read = {k: pd.read_csv(root / k / "pairs.tsv", sep="\t", dtype=str) for k in ("ida", "bids")}
    return root, read["ida"], read["bids"], clinica


def test_fixture_has_clinica_names(both_paths):
    *_, clinica = both_paths
    names = {p.name for p in clinica.glob("sub-*/ses-*/*/*.nii.gz")}
    assert names and all(n.startswith("sub-ADNI") for n in names)
    assert any("_trc-18FFDG_rec-coreg" in n for n in names)
    assert any("_trc-18FAV45_" in n for n in names)  # the amyloid quirk, as Clinica names it
    sessions = pd.read_csv(next(clinica.glob("sub-*/sub-*_sessions.tsv")), sep="\t")
    assert {"session_id", "diagnosis"} <= set(sessions.columns)
    assert set(sessions["diagnosis"]) <= {"CN", "MCI", "AD"}


def test_same_pairs_as_the_ida_path(both_paths):
    _, ida, bids, _ = both_paths
    assert len(ida) >= 2
    pd.testing.assert_frame_equal(ida[KEYS], bids[KEYS])


def test_same_ingested_images(both_paths):
    root, ida, bids, _ = both_paths
    for col in ("mri_path", "pet_path"):
        for a, b in zip(ida[col], bids[col], strict=True):
            ia, ib = nib.load(a), nib.load(b)
            np.testing.assert_allclose(ia.affine, ib.affine, atol=1e-4)
            np.testing.assert_allclose(ia.get_fdata(), ib.get_fdata(), rtol=1e-6, atol=1e-4)


def test_same_preprocessed_images(both_paths):
    root, ida, bids, _ = both_paths
    row_a, row_b = ida.iloc[0], bids.iloc[0]
    subject = f"{row_a['participant_id']}_{row_a['session_id']}"
    out = {}
    for key, row in (("ida", row_a), ("bids", row_b)):
        res = preprocess_pair(
            row["mri_path"], row["pet_path"], root / f"pre-{key}", subject, options=FAST
        )
        out[key] = res["files"]
    for name in ("t1_model", "pet_model", "pet_mni"):
        a, b = (nib.load(out[k][name]).get_fdata() for k in ("ida", "bids"))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    qc = [json.loads(Path(out[k]["qc_json"]).read_text()) for k in ("ida", "bids")]
    assert qc[0]["flags"] == qc[1]["flags"]
