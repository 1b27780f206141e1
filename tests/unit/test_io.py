"""Atomic writes and the checks of load_nifti."""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fusion3d.io import atomic_path, load_nifti, read_tsv, save_nifti, write_tsv

AFFINE = np.diag([1.5, 1.5, 1.5, 1.0])


def test_save_and_load_round_trip_keeps_affine(tmp_path):
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    affine = AFFINE.copy()
    affine[:3, 3] = [-10, 20, 5]
    path = save_nifti(data, affine, tmp_path / "a.nii.gz")
    loaded, loaded_affine = load_nifti(path)
    np.testing.assert_array_equal(loaded, data)
    np.testing.assert_array_equal(loaded_affine, affine)
    img = nib.load(path)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "table.tsv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_tsv_round_trip(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    write_tsv(frame, tmp_path / "t.tsv")
    pd.testing.assert_frame_equal(read_tsv(tmp_path / "t.tsv"), frame)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00garbage"), "cannot read NIfTI"),
        (lambda p: save_nifti(np.full((4, 4, 4), np.nan), AFFINE, p), "NaN/Inf"),
        (lambda p: save_nifti(np.full((4, 4, 4), np.inf), AFFINE, p), "NaN/Inf"),
        (lambda p: save_nifti(np.zeros((4, 4)), np.eye(4), p), "expected a 3D image"),
        (lambda p: save_nifti(np.zeros((4, 4, 4, 3)), AFFINE, p), "expected a 3D image"),
    ],
    ids=["zero-byte", "corrupt", "nan", "inf", "2d", "4d"],
)
def test_load_nifti_names_the_file_and_the_problem(tmp_path, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(ValueError, match=message) as info:
        load_nifti(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        load_nifti(tmp_path / "nope.nii.gz")


def test_read_only_folder_gives_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        with pytest.raises(OSError, match="cannot write here.*read-only"):
            write_tsv(pd.DataFrame({"a": [1]}), folder / "results" / "t.tsv")
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_atomic_writes_get_normal_permissions(tmp_path):
    path = write_tsv(pd.DataFrame({"a": [1]}), tmp_path / "t.tsv")
    assert path.stat().st_mode & 0o044 == 0o044  # group/others may read, as with open()
