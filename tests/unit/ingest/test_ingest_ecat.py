"""Tests of raw FDG in ECAT 7 (fusion3d.ingest.ecat via convert_image, and through run_ingest).

The ECAT files are built byte by byte from the ECAT 7.2 layout by
``fixtures_adni.ecat7_bytes`` (nibabel cannot create one from an array). The expected values
and world positions are computed here from the stored integers and the documented convention
(values = stored x scale_factor x calibration; head-first supine storage runs right -> left,
anterior -> posterior, superior -> inferior, i.e. dcm2niix's affine ``diag(-dx, -dy, -dz)``
about the volume centre), not from the reader.
"""

import json
from pathlib import Path

import fixtures_adni as fx  # noqa: E402
import numpy as np
import pytest

from fusion3d.ingest import run_ingest  # noqa: E402
from fusion3d.ingest.convert import ConversionError, convert_image  # noqa: E402
from fusion3d.io import read_tsv  # noqa: E402

PTID = "109_S_1343"
SHAPE = (6, 5, 4)  # x, y, planes as stored
VOXEL = (2.0, 2.5, 3.0)


def _frames(seed=0, n=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2000, size=SHAPE) for _ in range(n)]


def _world(affine, ijk):
    return (affine @ np.r_[np.asarray(ijk, float), 1.0])[:3]


def _expected_ras(stored_index):
    """RAS mm of a stored voxel: right->left, anterior->posterior, superior->inferior."""
    centre = (np.array(SHAPE) - 1) / 2.0
    return -(np.asarray(stored_index, float) - centre) * np.array(VOXEL)


def test_frames_scaled_and_averaged(tmp_path):
    frames = _frames()
    scales, calibration = [1.0, 2.0, 0.5], 3.0
    files = fx.write_ecat_image(
        tmp_path,
        ptid=PTID,
        image_id=78559,
        frames=frames,
        voxel_mm=VOXEL,
        scale_factors=scales,
        calibration=calibration,
    )
    img = convert_image(files, "ecat", tmp_path)
    scaled = [f * s * calibration for f, s in zip(frames, scales, strict=True)]
    stored_mean = np.mean(scaled, axis=0)
    assert img.data.shape == SHAPE and img.n_frames == 3 and img.data.dtype == np.float32
    np.testing.assert_allclose(img.data, stored_mean[::-1, ::-1, ::-1], rtol=1e-6)
    assert img.dtype == np.float32  # scaled values are written as float
    assert img.sidecar["FramesAveraged"] == 3
    assert img.sidecar["FrameDuration"] == [300.0, 300.0, 300.0]
    assert img.sidecar["ECATScaleFactors"] == scales


@pytest.mark.parametrize("orientation", [3, 8], ids=["head-first-supine", "unknown"])
def test_affine_is_ras_for_head_first_supine(tmp_path, orientation):
    frame = np.full(SHAPE, 10)
    hot = (1, 3, 0)  # near the patient's right, posterior, top plane
    frame[hot] = 5000
    files = fx.write_ecat_image(
        tmp_path, ptid=PTID, image_id=5, frames=[frame], voxel_mm=VOXEL, orientation=orientation
    )
    img = convert_image(files, "ecat", tmp_path)
    peak = np.unravel_index(np.argmax(img.data), img.data.shape)
    np.testing.assert_allclose(_world(img.affine, peak), _expected_ras(hot), atol=1e-4)
    np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), VOXEL, rtol=1e-6)
    assert img.n_frames == 1


def test_prone_or_feet_first_refused(tmp_path):
    files = fx.write_ecat_image(tmp_path, ptid=PTID, image_id=6, orientation=2)
    with pytest.raises(ConversionError, match="Feet_First_Supine \\(code 2\\) is not read"):
        convert_image(files, "ecat", tmp_path)


def test_sinogram_file_refused(tmp_path):
    files = fx.write_ecat_image(tmp_path, ptid=PTID, image_id=7, file_type=11)
    with pytest.raises(ConversionError, match="file type 3DSCAN \\(code 11\\) is not an image"):
        convert_image(files, "ecat", tmp_path)


def test_truncated_and_foreign_files(tmp_path):
    files = fx.write_ecat_image(tmp_path, ptid=PTID, image_id=8)
    whole = files[0].read_bytes()
    files[0].write_bytes(whole[: len(whole) - 700])
    with pytest.raises(ConversionError, match="corrupt ECAT"):
        convert_image(files, "ecat", tmp_path)
    files[0].write_bytes(b"\0" * 2048)
    with pytest.raises(ConversionError, match="not an ECAT 7 file"):
        convert_image(files, "ecat", tmp_path)
    files[0].write_bytes(b"")
    with pytest.raises(ConversionError, match="zero-byte"):
        convert_image(files, "ecat", tmp_path)


def test_one_file_per_frame_must_share_a_grid(tmp_path):
    a = fx.write_ecat_image(tmp_path / "a", ptid=PTID, image_id=9, frames=_frames(1, 1))
    b = fx.write_ecat_image(tmp_path / "b", ptid=PTID, image_id=9, frames=_frames(2, 2))
    img = convert_image(a + b, "ecat", tmp_path)
    assert img.n_frames == 3
    c = fx.write_ecat_image(
        tmp_path / "c", ptid=PTID, image_id=9, frames=_frames(3, 1), voxel_mm=(1.0, 1.0, 1.0)
    )
    with pytest.raises(ConversionError, match="on another grid"):
        convert_image(a + c, "ecat", tmp_path)


RAW = "ADNI Brain PET: Raw FDG"


def _download_with_raw_and_processed(root: Path) -> tuple[Path, Path]:
    """One subject: a T1, a raw FDG as ECAT and a processed FDG as DICOM, same visit."""
    dl = root / "download"
    rows = fx.add_subject(dl, PTID, t1_id=100, pet_id=102)  # processed FDG (DICOM)
    frames = [np.full((6, 5, 4), v) for v in (100, 200, 600)]
    fx.write_ecat_image(dl, ptid=PTID, image_id=101, frames=frames, description=RAW)
    rows.append(fx.manifest_row(101, PTID, RAW, "2012-01-31", modality="PET", fmt="ECAT"))
    return dl, fx.write_manifest(dl / "COLLECTION_1_1_2025.csv", rows)


def _ingest(root, dl, manifest, **options):
    out = root / "results"
    pairs = run_ingest(
        download_dir=dl,
        manifests=[manifest],
        bids_dir=out / "bids",
        pairs_tsv=out / "pairs.tsv",
        excluded_tsv=out / "excluded.tsv",
        options=options,
    )
    excluded = read_tsv(out / "excluded.tsv", dtype=str).set_index("image_id")["reason"]
    return pairs, excluded


def test_fdg_preference_decides_between_ecat_and_processed_dicom(tmp_path):
    dl, manifest = _download_with_raw_and_processed(tmp_path)
    pairs, excluded = _ingest(tmp_path / "default", dl, manifest)
    assert pairs["pet_image_id"].tolist() == ["I102"]
    assert excluded.to_dict() == {"I101": "lower-preference FDG PET at the same visit (chose I102)"}

    pairs, excluded = _ingest(tmp_path / "raw", dl, manifest, fdg_preference=[RAW, fx.FDG_DESC])
    assert pairs["pet_image_id"].tolist() == ["I101"]
    assert excluded.to_dict() == {"I102": "lower-preference FDG PET at the same visit (chose I101)"}
    pet = Path(pairs["pet_path"][0])
    assert pet.name.endswith("_trc-18FFDG_rec-raw_pet.nii.gz")
    import nibabel as nib

    np.testing.assert_allclose(nib.load(pet).get_fdata(), 300.0, rtol=1e-6)
    sidecar = json.loads(pet.with_name(pet.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["SourceFormat"] == "ecat" and sidecar["FramesAveraged"] == 3
