"""Tests of fusion3d.ingest.convert: series checks, dcm2niix geometry, frames, broken files."""

import fixtures_adni as fx  # noqa: E402
import nibabel as nib
import numpy as np
import pytest

from fusion3d.ingest.convert import (  # noqa: E402
    ConversionError,
    check_dicom_series,
    convert_image,
)

PTID = "002_S_0295"


def _series(tmp_path, **kw):
    kw.setdefault("description", fx.FDG_DESC)
    return fx.write_dicom_series(tmp_path / "dl", ptid=PTID, image_id=kw.pop("image_id", 11), **kw)


def _world(affine, ijk):
    return (affine @ np.r_[np.asarray(ijk, float), 1.0])[:3]


@pytest.mark.parametrize(
    "orientation",
    [(1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1)],  # axial and sagittal
    ids=["axial", "sagittal"],
)
def test_dicom_geometry_becomes_exact_ras_affine(tmp_path, orientation):
    rows, cols, nsl = 6, 5, 4
    data = np.full((rows, cols, nsl), 10, np.uint16)
    data[2, 3, 1] = 500  # row 2, column 3, slice 1
    origin = np.array([-10.0, -20.0, -30.0])
    files = _series(
        tmp_path,
        data=data,
        shape=(rows, cols, nsl),
        pixel_spacing=(2.0, 1.5),
        slice_spacing=2.5,
        origin=origin,
        orientation=orientation,
    )
    img = convert_image(files, "dicom", tmp_path)
    assert img.data.shape == (cols, rows, nsl) or sorted(img.data.shape) == sorted(
        (rows, cols, nsl)
    )
    peak = np.unravel_index(np.argmax(img.data), img.data.shape)
    row_dir, col_dir = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row_dir, col_dir)
    lps = origin + 3 * 1.5 * row_dir + 2 * 2.0 * col_dir + 1 * 2.5 * normal
    expected_ras = lps * np.array([-1, -1, 1])
    np.testing.assert_allclose(_world(img.affine, peak), expected_ras, atol=1e-3)
    assert sorted(np.round(np.linalg.norm(img.affine[:3, :3], axis=0), 4)) == [1.5, 2.0, 2.5]
    assert img.n_frames == 1 and img.sidecar.get("Modality") == "PT"


def test_missing_slice_detected_before_conversion(tmp_path):
    files = _series(tmp_path, shape=(4, 4, 6))
    files[2].unlink()
    with pytest.raises(ConversionError, match="missing slice.*InstanceNumber 3 absent"):
        check_dicom_series([f for f in files if f.exists()])


def test_missing_slice_with_renumbered_instances(tmp_path):
    import pydicom

    files = _series(tmp_path, shape=(4, 4, 6))
    files[2].unlink()
    kept = [f for f in files if f.exists()]
    for number, path in enumerate(kept, start=1):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = number
        ds.save_as(path)
    with pytest.raises(ConversionError, match="gap of 5.000 mm"):
        check_dicom_series(kept)


def test_truncated_dicom(tmp_path):
    files = _series(tmp_path, shape=(8, 8, 3))
    files[1].write_bytes(files[1].read_bytes()[:-60])
    with pytest.raises(ConversionError, match="truncated pixel data in .*I11.dcm|unreadable"):
        check_dicom_series(files)


def test_zero_byte_dicom(tmp_path):
    files = _series(tmp_path, shape=(4, 4, 3))
    files[0].write_bytes(b"")
    with pytest.raises(ConversionError, match="zero-byte file"):
        convert_image(files, "dicom", tmp_path)


def test_garbage_dicom(tmp_path):
    files = _series(tmp_path, shape=(4, 4, 3))
    files[0].write_bytes(b"not a dicom file at all")
    with pytest.raises(ConversionError, match="unreadable DICOM"):
        check_dicom_series(files)


def test_inconsistent_matrix(tmp_path):
    files = _series(tmp_path, shape=(4, 4, 3))
    files += fx.write_dicom_series(
        tmp_path / "other", ptid=PTID, description=fx.FDG_DESC, image_id=11, shape=(5, 5, 1)
    )
    with pytest.raises(ConversionError, match="series under one image ID|Rows/Columns"):
        check_dicom_series(files)


def test_dynamic_series_is_averaged(tmp_path):
    data = np.stack([np.full((4, 5, 3), v, np.uint16) for v in (10, 20, 60)], axis=3)
    files = _series(
        tmp_path, description="Co-registered Dynamic", shape=(4, 5, 3), n_frames=3, data=data
    )
    info = check_dicom_series(files)
    assert (info["n_slices"], info["n_frames"]) == (3, 3)
    img = convert_image(files, "dicom", tmp_path)
    assert img.data.shape == (5, 4, 3) and img.n_frames == 3
    np.testing.assert_allclose(img.data, 30.0)
    assert img.sidecar["FramesAveraged"] == 3


def test_dynamic_series_missing_one_frame_slice(tmp_path):
    files = _series(tmp_path, shape=(4, 4, 3), n_frames=2)
    files[-1].unlink()  # the last slice of frame 2: instance numbers stay contiguous
    with pytest.raises(ConversionError, match="unequal numbers of frames"):
        check_dicom_series(files[:-1])


def test_nifti_per_frame_is_stacked_and_averaged(tmp_path):
    frames = [np.full((3, 4, 5), v, np.float32) for v in (1.0, 2.0, 6.0)]
    files = fx.write_nifti_image(
        tmp_path, ptid=PTID, description="ADNI Brain PET: Raw FDG", image_id=5, frames=frames
    )
    img = convert_image(files, "nifti", tmp_path)
    assert img.data.shape == (3, 4, 5) and img.n_frames == 3
    np.testing.assert_allclose(img.data, 3.0)


def test_nifti_frames_on_different_grids_rejected(tmp_path):
    files = fx.write_nifti_image(
        tmp_path,
        ptid=PTID,
        description="X",
        image_id=5,
        frames=[np.ones((3, 4, 5)), np.ones((3, 4, 6))],
    )
    with pytest.raises(ConversionError, match="has shape"):
        convert_image(files, "nifti", tmp_path)


def test_nifti_keeps_affine_and_dtype(tmp_path):
    affine = np.array([[0, 0, 1.2, -90], [-1.0, 0, 0, 120], [0, 1.1, 0, -70], [0, 0, 0, 1]])
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5) + 1
    files = fx.write_nifti_image(
        tmp_path, ptid=PTID, description="MPRAGE", image_id=6, affine=affine, data=data
    )
    img = convert_image(files, "nifti", tmp_path)
    np.testing.assert_allclose(img.affine, affine)
    assert img.dtype == np.int16
    np.testing.assert_array_equal(img.data, data)


def test_nan_only_nifti(tmp_path):
    files = fx.write_nifti_image(
        tmp_path,
        ptid=PTID,
        description="MPRAGE",
        image_id=7,
        data=np.full((3, 3, 3), np.nan, np.float32),
    )
    with pytest.raises(ConversionError, match="only NaN"):
        convert_image(files, "nifti", tmp_path)


def test_corrupt_and_zero_byte_nifti(tmp_path):
    files = fx.write_nifti_image(tmp_path, ptid=PTID, description="MPRAGE", image_id=8)
    files[0].write_bytes(files[0].read_bytes()[:200])
    with pytest.raises(ConversionError, match="corrupt NIfTI"):
        convert_image(files, "nifti", tmp_path)
    files[0].write_bytes(b"")
    with pytest.raises(ConversionError, match="zero-byte"):
        convert_image(files, "nifti", tmp_path)


def test_written_output_reloads_with_same_affine(tmp_path):
    from fusion3d.ingest.bids import write_image

    files = _series(tmp_path, shape=(4, 5, 3))
    img = convert_image(files, "dicom", tmp_path)
    out = write_image(img.data, img.affine, tmp_path / "o.nii.gz", {"a": 1}, dtype=img.dtype)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    np.testing.assert_allclose(back.get_fdata(), img.data)
    assert (tmp_path / "o.json").exists()
