"""The bad-input matrix: every case ends in a clear error naming the file or key and the problem, or,
for one bad subject in a cohort, in an exclusion row while the rest go on.

Each case is its own test. Cases at the level of a whole study (config, manifest) must stop early with
a message; cases at the level of one subject must not stop the cohort.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import fixtures_adni as fx  # noqa: E402
import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from fusion3d.baselines import fuse_items  # noqa: E402
from fusion3d.ingest import ManifestError, read_manifests, run_ingest  # noqa: E402
from fusion3d.io import load_nifti, save_nifti, write_tsv  # noqa: E402
from fusion3d.metrics import compute_metrics  # noqa: E402
from fusion3d.subjects import read_pairs

REPO = Path(__file__).resolve().parents[2]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
GOOD, BAD = "002_S_0295", "011_S_0002"


# ----------------------------------------------------------------------------- study level: stop early
def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_config_typo_names_the_key():
    config = default_config()
    config["preprocess"]["brain_extration"] = "ants"
    with pytest.raises(WorkflowError, match="brain_extration"):
        validate(config, SCHEMA, set_default=True)


def test_config_wrong_type_names_the_key():
    config = default_config()
    config["split"]["seed"] = "forty-two"
    with pytest.raises(WorkflowError, match="seed"):
        validate(config, SCHEMA, set_default=True)


def test_config_unknown_top_level_key_names_the_key():
    config = copy.deepcopy(default_config())
    config["epochs"] = 10  # belongs under train:
    with pytest.raises(WorkflowError, match="epochs"):
        validate(config, SCHEMA, set_default=True)


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises((ManifestError, FileNotFoundError), match="NOPE_1_1_2024.csv"):
        read_manifests([tmp_path / "NOPE_1_1_2024.csv"])


def test_empty_manifest_names_the_file(tmp_path):
    path = tmp_path / "EMPTY_1_1_2024.csv"
    path.write_text("")
    with pytest.raises(ManifestError, match="EMPTY_1_1_2024.csv"):
        read_manifests([path])


def test_manifest_without_required_column_names_file_and_column(tmp_path):
    header = [h for h in fx.FULL_HEADER if h != "Acq Date"]
    path = fx.write_manifest(tmp_path / "C_1_1_2024.csv", [], header=header)
    with pytest.raises(ManifestError, match=r"C_1_1_2024\.csv.*Acq Date"):
        read_manifests([path])


def test_bad_manifest_stops_the_workflow_before_any_job(tmp_path):
    download = tmp_path / "adni"
    (download / "ADNI").mkdir(parents=True)
    header = [h for h in fx.FULL_HEADER if h != "Subject"]
    manifest = fx.write_manifest(download / "C_1_1_2024.csv", [], header=header)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cohort": {
                    "source": "adni",
                    "download_dir": str(download),
                    "manifests": [str(manifest)],
                },
                "methods": ["average"],
                "evaluate": {"reference": "average"},
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert (
        "C_1_1_2024.csv" in result.stderr + result.stdout
        and "Subject" in result.stderr + result.stdout
    )


def test_subject_listed_twice_in_pairs(tmp_path):
    row = {
        "participant_id": "sub-ADNI002S0295",
        "session_id": "ses-M000",
        "ptid": GOOD,
        "group": "CN",
        "mri_path": "a",
        "pet_path": "b",
    }
    write_tsv(pd.DataFrame([row, row]), tmp_path / "pairs.tsv")
    with pytest.raises(
        ValueError, match=r"pairs\.tsv: subject listed twice: sub-ADNI002S0295_ses-M000"
    ):
        read_pairs(tmp_path / "pairs.tsv")


def test_read_only_results_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
    ).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        with pytest.raises(OSError, match=r"results/x\.nii\.gz: cannot write here"):
            save_nifti(np.zeros((2, 2, 2)), np.eye(4), folder / "results" / "x.nii.gz")
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# ----------------------------------------------------------------------------- image level: clear errors
@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 8, 2)], ids=["2d", "4d"])
def test_wrong_dimensionality_names_the_file(tmp_path, shape):
    path = save_nifti(np.ones(shape), np.eye(4), tmp_path / "img.nii.gz")
    with pytest.raises(ValueError, match=r"img\.nii\.gz: expected a 3D image"):
        load_nifti(path)


def test_nan_voxels_name_the_file(tmp_path):
    data = np.ones((4, 4, 4))
    data[1, 2, 3] = np.nan
    path = save_nifti(data, np.eye(4), tmp_path / "nan.nii.gz")
    with pytest.raises(ValueError, match=r"nan\.nii\.gz: 1 NaN/Inf voxels"):
        load_nifti(path)


def test_mismatched_grids_name_both_files(tmp_path):
    mri = save_nifti(np.full((8, 8, 8), 0.5), np.eye(4), tmp_path / "s_mri.nii.gz")
    pet = save_nifti(np.full((8, 8, 6), 0.5), np.eye(4), tmp_path / "s_pet.nii.gz")
    with pytest.raises(ValueError, match="s_mri.nii.gz") as info:
        fuse_items("average", [("sub-ADNI002S0295_ses-M000", str(mri), str(pet))], tmp_path / "out")
    assert "s_pet.nii.gz" in str(info.value)
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(
            np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), np.zeros((8, 8, 6)), protocol="paper"
        )


# ----------------------------------------------------------------------------- subject level: exclusion
def ingest_with(tmp_path, break_bad) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A download with a good and a bad subject; ``break_bad(download)`` breaks the bad one."""
    download = tmp_path / "download"
    rows = fx.add_subject(download, GOOD, t1_id=101, pet_id=102)
    rows += fx.add_subject(download, BAD, t1_id=201, pet_id=202)
    rows = break_bad(download, rows) or rows
    manifest = fx.write_manifest(download / "COLLECTION_1_1_2024.csv", rows)
    out = tmp_path / "results"
    pairs = run_ingest(
        download_dir=download,
        manifests=[manifest],
        bids_dir=out / "bids",
        pairs_tsv=out / "pairs.tsv",
        excluded_tsv=out / "excluded.tsv",
    )
    excluded = pd.read_csv(out / "excluded.tsv", sep="\t", dtype=str)
    assert GOOD in set(pairs["ptid"]), "the good subject must still be paired"
    assert BAD not in set(pairs["ptid"])
    return pairs, excluded


def reason_of(excluded: pd.DataFrame, image_id: str) -> str:
    rows = excluded[excluded["image_id"].str.lstrip("I") == image_id.lstrip("I")]
    assert len(rows) >= 1, f"no exclusion row for {image_id}:\n{excluded}"
    return " | ".join(rows["reason"]).lower()


def pet_files(download: Path, image_id: int) -> list[Path]:
    return sorted(download.rglob(f"*_I{image_id}.dcm"))


def test_truncated_dicom_is_excluded(tmp_path):
    def truncate(download, rows):
        path = pet_files(download, 202)[1]
        path.write_bytes(path.read_bytes()[:-40])

    _, excluded = ingest_with(tmp_path, truncate)
    assert "truncat" in reason_of(excluded, "202")


def test_dicom_series_with_a_missing_slice_is_excluded(tmp_path):
    _, excluded = ingest_with(tmp_path, lambda d, r: pet_files(d, 202)[2].unlink())
    assert "slice" in reason_of(excluded, "202")


def test_zero_byte_nifti_is_excluded(tmp_path):
    def empty(download, rows):
        next(download.rglob("*_I201.nii")).write_bytes(b"")

    _, excluded = ingest_with(tmp_path, empty)
    reason = reason_of(excluded, "201")
    assert "empty" in reason or "0 bytes" in reason or "zero" in reason


def test_nan_nifti_is_excluded(tmp_path):
    def nan(download, rows):
        import nibabel as nib

        path = next(download.rglob("*_I201.nii"))
        img = nib.load(path)
        data = np.array(img.get_fdata(), dtype=np.float32)  # a copy: the file is rewritten below
        affine = img.affine.copy()
        data[1, 1, 1] = np.nan
        path.unlink()
        nib.save(nib.Nifti1Image(data, affine), path)

    _, excluded = ingest_with(tmp_path, nan)
    assert "nan" in reason_of(excluded, "201")


def test_all_zero_pet_is_excluded_at_ingest(tmp_path):
    def zero(download, rows):
        import pydicom

        for path in pet_files(download, 202):
            ds = pydicom.dcmread(path)
            ds.PixelData = bytes(len(ds.PixelData))
            ds.save_as(path)

    _, excluded = ingest_with(tmp_path, zero)
    assert "all zero" in reason_of(excluded, "202")


def test_image_id_not_found_on_disk_is_excluded(tmp_path):
    def drop(download, rows):
        for path in pet_files(download, 202):
            path.unlink()

    _, excluded = ingest_with(tmp_path, drop)
    assert "not found" in reason_of(excluded, "202")


def test_link_leaving_the_download_is_excluded_and_never_read(tmp_path):
    outside = tmp_path / "outside.nii"

    def link(download, rows):
        path = next(download.rglob("*_I201.nii"))
        outside.write_bytes(path.read_bytes())
        path.unlink()
        os.symlink(outside, path)

    _, excluded = ingest_with(tmp_path, link)
    assert "outside" in reason_of(excluded, "201") or "leaves" in reason_of(excluded, "201")


def test_duplicate_image_id_with_conflicting_rows_is_excluded(tmp_path):
    def duplicate(download, rows):
        clash = dict(rows[-1])
        clash["Subject"] = GOOD.replace("0295", "9999")
        return rows + [clash]

    _, excluded = ingest_with(tmp_path, duplicate)
    assert "duplicate" in reason_of(excluded, "202")


def test_subject_with_only_a_t1_is_excluded(tmp_path):
    def only_t1(download, rows):
        for path in pet_files(download, 202):
            path.unlink()
        return [r for r in rows if r["Image Data ID"] != "I202"]

    _, excluded = ingest_with(tmp_path, only_t1)
    assert "fdg" in reason_of(excluded, "201") or "pet" in reason_of(excluded, "201")


def test_truncated_ecat_is_excluded(tmp_path):
    def truncated_ecat(download, rows):
        for path in pet_files(download, 202):  # the FDG comes as raw ECAT instead of DICOM
            path.unlink()
        path = fx.write_ecat_image(download, ptid=BAD, image_id=202, description=fx.FDG_DESC)[0]
        path.write_bytes(path.read_bytes()[:-600])

    _, excluded = ingest_with(tmp_path, truncated_ecat)
    assert "corrupt ecat" in reason_of(excluded, "202")


def test_image_files_without_an_image_id_are_reported(tmp_path):
    def unnamed(download, rows):
        for path in pet_files(download, 202):  # no image ID in the name, outside I<id> folders
            target = path.parent.parent / "S1202"
            target.mkdir(exist_ok=True)
            path.rename(target / path.name.split("_")[-3])
        path.parent.rmdir()

    _, excluded = ingest_with(tmp_path, unnamed)
    assert "have no image id in their name and no i<id> folder" in reason_of(excluded, "202")


def test_all_zero_pet_reaching_preprocessing_is_a_clear_error(tmp_path):
    from fixtures_preprocess import make_pair  # small synthetic pair with known truth

    from fusion3d.preprocess import preprocess_pair

    pair = make_pair(tmp_path / "in", t1_voxel_mm=4.0, pet_voxel_mm=5.0)
    data, affine = load_nifti(pair["pet"])
    save_nifti(np.zeros_like(data), affine, pair["pet"])
    with pytest.raises(ValueError, match=r"pet\.nii\.gz: image is constant"):
        preprocess_pair(pair["t1"], pair["pet"], tmp_path / "out", "sub-ADNI002S0295_ses-M000")


def test_noise_pet_is_flagged_with_a_reason_not_a_silent_bad_image(tmp_path):
    from fixtures_preprocess import make_pair

    from fusion3d.preprocess import preprocess_pair

    pair = make_pair(tmp_path / "in", t1_voxel_mm=4.0, pet_voxel_mm=5.0, noise_pet=True)
    fast = {
        "brain_extraction": "ants",
        "registration_mm": 4.0,
        "mni_resolution_mm": 3.0,
        "grid": 32,
        "qc_bounds": {"min_pet_mi": 0.05, "min_mni_ncc": 0.6},
    }
    result = preprocess_pair(
        pair["t1"], pair["pet"], tmp_path / "out", "sub-ADNI002S0295_ses-M000", options=fast
    )
    reasons = " ".join(f["flag"] + " " + f["reason"] for f in result["qc"]["flags"]).lower()
    assert "pet" in reasons


# ----------------------------------------------------------------- cross-key checks, at start
def consistent_config() -> dict:
    config = default_config()
    validate(config, SCHEMA, set_default=True)
    return config


def conflicts_of(change) -> list[str]:
    from fusion3d.config import config_conflicts

    config = consistent_config()
    change(config)
    return config_conflicts(config)


def test_default_config_has_no_conflict():
    from fusion3d.config import config_conflicts

    assert config_conflicts(consistent_config()) == []


def test_grid_the_network_cannot_tile_names_grid_model_and_rule():
    problems = conflicts_of(lambda c: c["preprocess"].update(grid=63))
    line = next(p for p in problems if "models.dcfb3d" in p)
    assert (
        "preprocess.grid (63)" in line and "divisible by" in line and "nearest valid grid" in line
    )


def test_patch_larger_than_grid_names_both_keys():
    problems = conflicts_of(lambda c: c["preprocess"].update(grid=2))
    assert any("models.dcfb3d.patch_size (4)" in p and "patch_size <= grid" in p for p in problems)


def test_several_gpus_without_gpu_names_both_keys():
    problems = conflicts_of(lambda c: c["resources"].update(gpus=2, gpu=False))
    assert problems == [
        "config keys resources.gpus (2) and resources.gpu (false): rule: more than one GPU "
        "needs resources.gpu: true"
    ]


def test_split_fractions_that_leave_a_split_empty_name_the_split():
    problems = conflicts_of(
        lambda c: c["split"].update(fractions={"train": 0.9, "val": 0.1, "test": 0.0})
    )
    assert len(problems) == 1 and "test split empty" in problems[0]
    assert "split.fractions and cohort.synthetic.n_subjects" in problems[0]


def test_split_empty_for_a_small_cohort():
    def tiny(config):
        config["cohort"]["synthetic"]["n_subjects"] = 2

    problems = conflicts_of(tiny)
    assert any("empty of 2 subjects" in p for p in problems), problems


def test_a_baseline_at_its_published_size_that_cannot_tile_the_grid_is_stopped_at_start():
    """Every network of methods is checked, with or without a models entry: DILRAN at its
    published size (no entry) halves the grid once, so an odd grid cannot work."""
    from fusion3d.config import resolve

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["preprocess"]["grid"] = 65
    config["methods"] = ["dilran", "average"]
    config["evaluate"]["reference"] = "dilran"
    config["models"] = {}
    config["train"]["overrides"] = {}
    with pytest.raises(ValueError) as err:
        resolve(config, SCHEMA)
    lines = [line for line in str(err.value).splitlines() if "models.dilran" in line]
    assert len(lines) == 1 and "preprocess.grid (65)" in lines[0], str(err.value)
    assert "divisible by 2" in lines[0] and "nearest valid grid 64 or 66" in lines[0]


def test_models_are_filled_before_the_checks_and_dcfb_takes_its_dimension():
    from fusion3d.config import resolve

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    del config["models"]["dcfb2d"], config["models"]["matr"]
    resolved = resolve(config, SCHEMA)
    assert resolved["models"]["matr"] == {} and resolved["models"]["dcfb2d"] == {"spatial_dims": 2}
    # dcfb2d at its published sizes cannot tile the demo's 64^3 grid: the check saw it
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    del config["models"]["dcfb2d"]
    config["preprocess"]["grid"] = 48
    with pytest.raises(ValueError, match=r"models\.dcfb2d: dcfb2d cannot tile a grid of 48"):
        resolve(config, SCHEMA)


def test_overrides_of_a_network_not_in_methods_and_wrong_dimension_are_named():
    def change(config):
        config["methods"] = ["dcfb3d", "average"]
        config["models"]["dcfb3d"]["spatial_dims"] = 2

    problems = conflicts_of(change)
    assert any("train.overrides and methods" in p and "'swinfuse'" in p for p in problems)
    assert any("models.dcfb3d.spatial_dims: 2" in p for p in problems), problems


def test_split_fractions_must_add_up_to_one():
    problems = conflicts_of(lambda c: c["split"]["fractions"].update(train=0.5))
    assert any("add up to 0.875; rule: 1" in p for p in problems), problems


def test_unknown_method_in_baselines_is_named():
    problems = conflicts_of(lambda c: c.update(baselines={"averge": {"weight": 0.5}}))
    assert any("baselines" in p and "'averge'" in p for p in problems), problems


def test_conflicts_stop_the_workflow_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preprocess: {grid: 63}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(REPO / "tests" / "e2e" / "config_tiny.yaml"),
            str(bad),
            "-n",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "preprocess.grid (63)" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
