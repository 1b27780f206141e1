"""Header checks at ingest: headers that lie are refused or flagged, never silently used.

One test per case, written with nibabel: the no-orientation T1 of the finding (the real head
with qform/sform codes 0 and pixdim 0) is excluded, not mirrored; a wrong datatype, a
truncated file, implausible voxel sizes or field of view, a singular sform are excluded with a
reason that names the file and the field; qform/sform disagreement and a T1/PET handedness
difference are flagged; every table row is one line for the ``csv`` module (strict); the
console names what ingest drops. The left-right check of QC flags a PET mirrored on the real
head and passes the unmirrored one.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import struct
import tempfile
import threading
from pathlib import Path

import fixtures_adni as fx  # noqa: E402
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fusion3d.ingest import run_ingest  # noqa: E402
from fusion3d.ingest.convert import ConversionError, convert_image  # noqa: E402
from fusion3d.ingest.headers import (  # noqa: E402
    handedness,
    nibabel_messages,
    one_line,
    resolve_header_checks,
)

REPO = Path(__file__).resolve().parents[3]
REAL_T1 = REPO / "tests" / "data" / "real_t1" / "seg3d_mr_t1.nii.gz"
GOOD, BAD = "002_S_0295", "011_S_0002"
#: Byte offsets of NIfTI-1 header fields.
DATATYPE, PIXDIM, QFORM_CODE = 70, 76, 252


def patch_nifti(path: Path, patches: dict[int, bytes]) -> None:
    """Overwrite header bytes of a .nii or .nii.gz in place (``offset -> bytes``)."""
    gz = path.name.endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    for offset, value in patches.items():
        raw[offset : offset + len(value)] = value
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))


def no_orientation(path: Path) -> None:
    """The finding's damage: qform_code = sform_code = 0 and pixdim[1:4] = 0."""
    patch_nifti(path, {PIXDIM + 4: struct.pack("<3f", 0, 0, 0), QFORM_CODE: b"\0\0\0\0"})


def ingest(tmp_path, break_bad=None, options=None) -> dict:
    """A good and a bad subject through run_ingest; ``break_bad(download)`` breaks the bad."""
    download = tmp_path / "download"
    rows = fx.add_subject(download, GOOD, t1_id=101, pet_id=102)
    rows += fx.add_subject(download, BAD, t1_id=201, pet_id=202)
    if break_bad is not None:
        break_bad(download)
    manifest = fx.write_manifest(download / "COLLECTION_1_1_2024.csv", rows)
    out = tmp_path / "results"
    pairs = run_ingest(
        download_dir=download,
        manifests=[manifest],
        bids_dir=out / "bids",
        pairs_tsv=out / "pairs.tsv",
        excluded_tsv=out / "excluded.tsv",
        options=options,
    )
    read = lambda name: pd.read_csv(out / name, sep="\t", dtype=str, keep_default_na=False)  # noqa: E731
    return {
        "pairs": pairs,
        "excluded": read("excluded.tsv"),
        "flags": read("header_flags.tsv"),
        "out": out,
    }


def reason(excluded: pd.DataFrame, image_id: str) -> str:
    rows = excluded[excluded["image_id"] == image_id]
    assert len(rows) == 1, excluded
    return rows["reason"].iloc[0]


def t1_file(download: Path, image_id: int = 201) -> Path:
    return next(download.rglob(f"*_I{image_id}.nii"))


def rewrite_t1(download: Path, affine: np.ndarray, *, sform: np.ndarray | None = None) -> None:
    """Rewrite the bad subject's T1 with ``affine`` (qform; sform = ``sform`` or the same)."""
    path = t1_file(download)
    data = np.asarray(nib.load(path).dataobj).copy()
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine if sform is None else sform, code=1)
    nib.save(img, path)


# ----------------------------------------------------------------------------- the finding
def test_real_t1_without_orientation_is_excluded_not_mirrored(tmp_path, caplog):
    def damage(download):
        path = t1_file(download)
        target = path.with_name(path.name + ".gz")
        target.write_bytes(REAL_T1.read_bytes())
        path.unlink()
        no_orientation(target)

    # nibabel alone would read it: 1 mm voxels, a left-right flipped affine
    probe = tmp_path / "probe.nii.gz"
    probe.write_bytes(REAL_T1.read_bytes())
    no_orientation(probe)
    assert nib.aff2axcodes(nib.load(probe).affine)[0] == "L"
    assert nib.aff2axcodes(nib.load(REAL_T1).affine)[0] == "R"
    with caplog.at_level(logging.WARNING, logger="fusion3d.ingest"):
        run = ingest(tmp_path, damage)
    why = reason(run["excluded"], "I201")
    assert why.startswith("unusable image: no orientation: ADNI_011_S_0002_MR_"), why
    assert "qform_code 0 and sform_code 0" in why and "pixdim[1:4] 0 x 0 x 0" in why
    assert "I201" not in set(run["pairs"]["mri_image_id"])
    summary = [r.getMessage() for r in caplog.records if "ingest excluded" in r.getMessage()]
    assert summary and "no orientation" in summary[0] and "_I201.nii.gz" in summary[0]
    assert caplog.records[-1].levelno == logging.WARNING


# ----------------------------------------------------------------------------- refusals
def test_unknown_datatype_says_the_header_is_invalid(tmp_path):
    run = ingest(tmp_path, lambda d: patch_nifti(t1_file(d), {DATATYPE: struct.pack("<h", -649)}))
    why = reason(run["excluded"], "I201")
    assert "invalid NIfTI header" in why and "datatype -649 is not a NIfTI data type code" in why
    assert "not recognized" not in why


def test_truncated_nifti_names_the_bytes(tmp_path):
    def cut(download):
        path = t1_file(download)
        path.write_bytes(path.read_bytes()[:400])

    why = reason(ingest(tmp_path, cut)["excluded"], "I201")
    assert "truncated NIfTI" in why and "of the" in why and "bytes" in why


def test_truncated_gz_reason_is_one_line(tmp_path):
    def cut(download):
        path = t1_file(download)
        target = path.with_name(path.name + ".gz")
        target.write_bytes(gzip.compress(path.read_bytes())[:-200])
        path.unlink()

    run = ingest(tmp_path, cut)
    why = reason(run["excluded"], "I201")
    assert why.startswith("unusable image: corrupt NIfTI: ") and "\n" not in why
    assert_tsv_rows_strict(run["out"] / "excluded.tsv", 4)


@pytest.mark.parametrize(
    ("which", "affine", "expected"),
    [
        ("t1", np.diag([5.0, 5.0, 5.0, 1.0]), "T1 voxels must be 0.5-4 mm"),
        ("t1", np.diag([0.2, 1.0, 1.0, 1.0]), "ingest.header_checks.t1_voxel_mm"),
    ],
)
def test_implausible_t1_voxel_size_is_excluded(tmp_path, which, affine, expected):
    why = reason(ingest(tmp_path, lambda d: rewrite_t1(d, affine))["excluded"], "I201")
    assert "implausible voxel size" in why and expected in why and "ADNI_011_S_0002" in why


def test_implausible_pet_voxel_size_is_excluded(tmp_path):
    files = fx.write_dicom_series(
        tmp_path / "dl", ptid=BAD, description=fx.FDG_DESC, image_id=9, pixel_spacing=(8, 8)
    )
    with pytest.raises(ConversionError, match=r"implausible voxel size.*PET voxels must be 0.5-6"):
        convert_image(files, "dicom", tmp_path, modality="fdg")
    assert convert_image(files, "dicom", tmp_path, modality=None).data.size  # no range asked


def test_implausible_field_of_view_is_excluded(tmp_path):
    run = ingest(tmp_path, options={"header_checks": {"fov_mm": [100, 600]}})
    why = reason(run["excluded"], "I201")
    assert "implausible field of view" in why and "ingest.header_checks.fov_mm" in why
    assert run["pairs"].empty  # the fixture images are a few mm wide


def test_invalid_xform_code_is_refused(tmp_path):
    run = ingest(tmp_path, lambda d: patch_nifti(t1_file(d), {QFORM_CODE + 2: b"\x07\0"}))
    assert "sform_code 7 is not a NIfTI xform code" in reason(run["excluded"], "I201")


def test_singular_sform_is_refused(tmp_path):
    def singular(download):
        rewrite_t1(download, np.diag([1.0, 1.2, 1.5, 1.0]), sform=np.diag([1.0, 0.0, 1.5, 1.0]))

    why = reason(ingest(tmp_path, singular)["excluded"], "I201")
    assert "sform (code 1) is singular" in why


def test_header_checks_options_name_the_key():
    with pytest.raises(ValueError, match="ingest.header_checks.t1_voxel_mm"):
        resolve_header_checks({"t1_voxel_mm": [4, 1]})
    with pytest.raises(ValueError, match="unknown ingest.header_checks key"):
        resolve_header_checks({"voxel_mm": [1, 2]})
    with pytest.raises(ValueError, match="qform_sform_tolerance_mm"):
        resolve_header_checks({"qform_sform_tolerance_mm": 0})


# ----------------------------------------------------------------------------- flags
def test_qform_sform_disagreement_is_flagged_and_the_sform_used(tmp_path, caplog):
    qform = np.diag([1.0, 1.2, 1.5, 1.0])
    sform = qform.copy()
    sform[:3, 3] = [10.0, 0.0, 0.0]
    with caplog.at_level(logging.WARNING, logger="fusion3d.ingest"):
        run = ingest(tmp_path, lambda d: rewrite_t1(d, qform, sform=sform))
    assert "I201" in set(run["pairs"]["mri_image_id"])
    rows = run["flags"][run["flags"]["flag"] == "qform_sform_disagree"]
    assert list(rows["image_id"]) == ["I201"]
    assert (
        "disagree by 10.0 mm" in rows["reason"].iloc[0]
        and "using the sform" in rows["reason"].iloc[0]
    )
    assert any("using the sform" in r.getMessage() for r in caplog.records)
    t1 = run["pairs"].set_index("mri_image_id").loc["I201", "mri_path"]
    assert np.allclose(nib.load(t1).affine, sform)
    sidecar = json.loads(Path(str(t1).replace(".nii.gz", ".json")).read_text())
    assert sidecar["HeaderAffine"] == "sform" and "disagree" in sidecar["HeaderFlags"][0]


def test_t1_pet_handedness_difference_is_flagged(tmp_path):
    las = np.diag([-1.0, 1.2, 1.5, 1.0])  # a legal LAS T1; the DICOM PET stays right-handed
    run = ingest(tmp_path, lambda d: rewrite_t1(d, las))
    rows = run["flags"][run["flags"]["flag"] == "handedness"]
    assert sorted(rows["image_id"]) == ["I201", "I202"]
    assert (
        "T1 ADNI_011_S_0002" in rows["reason"].iloc[0] and "left-handed" in rows["reason"].iloc[0]
    )
    assert set(run["pairs"]["ptid"]) == {GOOD, BAD}  # flagged, not excluded
    assert run["flags"][run["flags"]["ptid"] == GOOD].empty  # the good pair agrees


def test_handedness_follows_each_readers_convention():
    left = np.diag([-2.0, 2.0, 2.0, 1.0])
    assert handedness(left, "dicom") == 1 and handedness(left, "nifti") == -1
    assert handedness(np.eye(4), "ecat") == 1


# ----------------------------------------------------------------------------- tables and console
def assert_tsv_rows_strict(path: Path, n_columns: int) -> list[list[str]]:
    """Every line of ``path`` is one row of ``n_columns`` fields (csv module, strict)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", strict=True))
    assert all(len(row) == n_columns for row in rows), rows
    lines = path.read_text().splitlines()
    assert len(lines) == len(rows)
    return rows


def test_tables_hold_one_line_per_row_for_csv_strict(tmp_path):
    from fusion3d.preprocess.qc import FLAG_COLUMNS, collect_qc, flag, write_json

    run = ingest(tmp_path, lambda d: patch_nifti(t1_file(d), {DATATYPE: struct.pack("<h", -649)}))
    assert_tsv_rows_strict(run["out"] / "excluded.tsv", 4)
    assert_tsv_rows_strict(run["out"] / "header_flags.tsv", 4)
    record = flag("brain_extraction_failed", "brain extraction failed:\n\tline 2\r\nline 3")
    qc_json = write_json({"subject_id": "sub-1", "flags": [record]}, tmp_path / "qc.json")
    _, flags = collect_qc([qc_json])
    flags.to_csv(tmp_path / "flags.tsv", sep="\t", index=False)
    rows = assert_tsv_rows_strict(tmp_path / "flags.tsv", len(FLAG_COLUMNS))
    assert rows[1][-1] == "brain extraction failed: line 2 line 3"
    assert one_line("a\nb\tc\r\n d") == "a b c d"


def test_missing_tsv_rows_are_one_line(tmp_path):
    download = tmp_path / "download"
    rows = fx.add_subject(download, GOOD, t1_id=101, pet_id=102)
    manifest = fx.write_manifest(download / "COLLECTION_1_1_2024.csv", rows)
    (tmp_path / "ids.csv").write_text("I101\nI102\nI999\n")
    out = tmp_path / "results"
    run_ingest(
        download_dir=download,
        manifests=[manifest],
        bids_dir=out / "bids",
        pairs_tsv=out / "pairs.tsv",
        excluded_tsv=out / "excluded.tsv",
        cohort_ids=tmp_path / "ids.csv",
        options={"allow_incomplete_cohort": True},
    )
    assert_tsv_rows_strict(out / "missing.tsv", 4)


def test_nibabel_messages_are_logged_with_the_file_name(tmp_path, caplog):
    path = tmp_path / "qfac.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), path)
    patch_nifti(path, {PIXDIM + 4: struct.pack("<f", -1.0)})  # nibabel fixes it and logs
    with caplog.at_level(logging.WARNING):
        convert_image([path], "nifti", tmp_path)
    ours = [r.getMessage() for r in caplog.records if r.name == "fusion3d.ingest"]
    assert any(
        m.startswith("nibabel on qfac.nii: pixdim[1,2,3] should be positive") for m in ours
    ), ours
    assert not [r for r in caplog.records if r.name.startswith("nibabel")]


def test_nibabel_capture_keeps_other_threads_messages():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger, handler = logging.getLogger("nibabel.global"), Keep()
    logger.addHandler(handler)
    try:
        with nibabel_messages() as mine:
            logger.warning("from this thread")
            other = threading.Thread(target=lambda: logger.warning("from another thread"))
            other.start()
            other.join()
    finally:
        logger.removeHandler(handler)
    assert mine == ["from this thread"] and seen == ["from another thread"]


# ----------------------------------------------------------------------------- left-right check
def _real_head_module():
    """tests/e2e/test_real_head.py, whose PET model this test shares, loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "real_head_e2e", REPO / "tests" / "e2e" / "test_real_head.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_head_pet() -> dict:
    """The real head at 2 mm and a PET made on it as tests/e2e/test_real_head.py makes it."""
    rh = _real_head_module()

    from fusion3d.preprocess import registration
    from fusion3d.synthetic.geometry import grid_affine
    from fusion3d.synthetic.pet import PET_AXES, PET_SHAPE, PET_VOXEL_MM

    small = registration.resample_to_resolution(registration.nib_to_ants(nib.load(rh.REAL_T1)), 2.0)
    img = registration.ants_to_nib(small)
    t1 = img.get_fdata(dtype=np.float32)
    brain = rh.truth_brain_mask(t1, img.header.get_zooms()[:3])
    centre = img.affine @ np.r_[np.argwhere(brain).mean(0), 1.0]
    pose = rh.pet_pose(centre[:3])
    pet_affine = grid_affine(
        PET_AXES, (PET_VOXEL_MM,) * 3, PET_SHAPE, (np.linalg.inv(pose) @ centre)[:3]
    )
    n4 = rh.bias_corrected(img)
    uptake = rh.fdg_uptake(n4, brain)
    pet = rh.render_pet(uptake, img.affine, pose, pet_affine, PET_SHAPE, rh.PSF_FWHM_MM)
    return {
        "t1": n4 * brain,
        "brain": brain,
        "affine": img.affine,
        "pet": pet,
        "pet_affine": pet_affine,
    }


def _lr(case: dict, pet: np.ndarray) -> dict:
    """The QC's left-right check of ``pet`` against the real head, at the pipeline's 3 mm."""
    from fusion3d.preprocess import qc, registration

    to_ants = registration.nib_to_ants
    fixed = registration.resample_to_resolution(
        to_ants(nib.Nifti1Image(case["t1"], case["affine"])), 3.0
    )
    mask_img = to_ants(nib.Nifti1Image(case["brain"].astype(np.float32), case["affine"]))
    mask = registration.resample_to_resolution(mask_img, 3.0).numpy() > 0.5
    moving = registration.resample_to_resolution(
        to_ants(nib.Nifti1Image(pet, case["pet_affine"])), 3.0
    )
    with tempfile.TemporaryDirectory() as tmp:
        return qc.left_right_check(fixed, moving, mask, f"{tmp}/")


def test_left_right_check_passes_the_pet_as_made(real_head_pet):
    from fusion3d.preprocess import qc

    record = _lr(real_head_pet, real_head_pet["pet"])
    assert record["as_is"] > record["mirrored"] + 0.05, record
    assert qc.left_right_flags(record) == []


def test_left_right_check_flags_a_mirrored_pet(real_head_pet):
    from fusion3d.preprocess import qc

    case = real_head_pet
    lr_axis = int(np.argmax(np.abs(case["pet_affine"][0, :3])))  # the voxel axis along x
    mirrored = np.ascontiguousarray(np.flip(case["pet"], lr_axis))  # same header: it lies
    record = _lr(case, mirrored)
    assert record["mirrored"] > record["as_is"] + 0.05, record
    (found,) = qc.left_right_flags(record)
    assert found["flag"] == "pet_left_right" and found["figure"] == "pet_mirror_gain"
    assert "mirrored left-right fits the T1 better" in found["reason"]
