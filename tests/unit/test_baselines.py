"""Tests for fusion3d.baselines: closed forms, exactness on identical inputs, errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from fusion3d.baselines import (
    METHODS,
    fuse,
    fuse_items,
    laplacian_pyramid,
    pca_weights,
    reconstruct_laplacian,
)
from fusion3d.io import load_nifti, save_nifti


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((9, 12, 7)), rng.random((9, 12, 7))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(8, 8, 8), (9, 10, 11), (5, 3, 7), (1, 4, 6)])
def test_shape_dtype_range(method: str, shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    out = fuse(method, rng.random(shape), rng.random(shape))
    assert out.shape == shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(16, 16, 16), (9, 10, 11)])
def test_identical_inputs_give_input(method: str, shape: tuple[int, int, int]) -> None:
    vol = np.random.default_rng(2).random(shape)
    np.testing.assert_allclose(fuse(method, vol, vol), vol, atol=1e-5)


def test_average_weights(pair: tuple[np.ndarray, np.ndarray]) -> None:
    mri, pet = pair
    np.testing.assert_allclose(fuse("average", mri, pet), 0.5 * (mri + pet), atol=1e-6)
    np.testing.assert_allclose(
        fuse("average", mri, pet, weights=(0.25, 0.75)), 0.25 * mri + 0.75 * pet, atol=1e-6
    )
    # weights are normalised to sum to one
    np.testing.assert_allclose(
        fuse("average", mri, pet, weights=(1, 3)), 0.25 * mri + 0.75 * pet, atol=1e-6
    )
    np.testing.assert_allclose(fuse("average", mri, pet, weights=(1, 0)), mri, atol=1e-6)
    for bad in [(0, 0), (-1, 2), (1, 2, 3), "ab"]:
        with pytest.raises(ValueError, match="weights"):
            fuse("average", mri, pet, weights=bad)


def test_maximum(pair: tuple[np.ndarray, np.ndarray]) -> None:
    mri, pet = pair
    np.testing.assert_allclose(fuse("maximum", mri, pet), np.maximum(mri, pet), atol=1e-6)


def test_pca_weights_closed_form() -> None:
    rng = np.random.default_rng(3)
    mri = rng.random((6, 6, 6))
    # pet constant: covariance diag(var, 0) -> all weight on the MRI
    assert pca_weights(mri, np.full_like(mri, 0.3)) == pytest.approx((1.0, 0.0))
    # pet = mri: covariance [[v, v], [v, v]] -> eigenvector (1, 1)/sqrt(2) -> 0.5 / 0.5
    assert pca_weights(mri, mri) == pytest.approx((0.5, 0.5))
    # pet = 2 * mri: covariance v [[1, 2], [2, 4]] -> eigenvector (1, 2) -> (1/3, 2/3)
    assert pca_weights(mri * 0.4, mri * 0.8) == pytest.approx((1 / 3, 2 / 3))
    # uncorrelated, variances 1 and 4 -> eigenvector (0, 1)
    a = np.array([0.0, 1.0, 0.0, 1.0])
    b = np.array([0.0, 0.0, 2.0, 2.0])
    assert pca_weights(a, b) == pytest.approx((0.0, 1.0), abs=1e-12)
    # both constant -> equal weights
    assert pca_weights(np.zeros(8), np.ones(8)) == (0.5, 0.5)
    fused = fuse("pca", mri, np.full_like(mri, 0.3))
    np.testing.assert_allclose(fused, mri, atol=1e-6)


def test_laplacian_pyramid_inverts() -> None:
    vol = np.random.default_rng(4).random((13, 10, 9))
    pyr = laplacian_pyramid(vol, 3)
    assert len(pyr) == 4
    assert pyr[0].shape == vol.shape and pyr[1].shape == (7, 5, 5)
    np.testing.assert_allclose(reconstruct_laplacian(pyr), vol, atol=1e-10)


def test_wavelet_haar_closed_form() -> None:
    # A flat MRI has zero detail, so every fused detail is the PET's, and the
    # fused approximation is the mean of both. With the orthonormal Haar
    # wavelet at level 2, the approximation part of a volume is its mean over
    # 4x4x4 blocks, hence fused = pet + 0.5 * (0.5 - blockmean4(pet)).
    rng = np.random.default_rng(5)
    pet = 0.25 + 0.5 * rng.random((16, 8, 12))
    mri = np.full_like(pet, 0.5)
    fused = fuse("wavelet", mri, pet, wavelet="haar", level=2)
    blocks = pet.reshape(4, 4, 2, 4, 3, 4).mean(axis=(1, 3, 5))
    blockmean = np.repeat(np.repeat(np.repeat(blocks, 4, 0), 4, 1), 4, 2)
    np.testing.assert_allclose(fused, pet + 0.5 * (0.5 - blockmean), atol=1e-6)


def test_errors(pair: tuple[np.ndarray, np.ndarray]) -> None:
    mri, pet = pair
    with pytest.raises(ValueError, match="unknown fusion method 'median'"):
        fuse("median", mri, pet)
    with pytest.raises(ValueError, match="shape mismatch"):
        fuse("average", mri, pet[:-1])
    with pytest.raises(ValueError, match="3D"):
        fuse("average", mri[0], pet[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse("maximum", mri * 3, pet)
    with pytest.raises(ValueError, match="NaN"):
        bad = mri.copy()
        bad[0, 0, 0] = np.nan
        fuse("maximum", bad, pet)
    with pytest.raises(ValueError, match="unknown parameter"):
        fuse("maximum", mri, pet, weights=(1, 1))
    with pytest.raises(ValueError, match="wavelet"):
        fuse("wavelet", mri, pet, wavelet="nope")
    with pytest.raises(ValueError, match="levels"):
        fuse("laplacian", mri, pet, levels=0)


def test_fuse_items_writes_nifti(tmp_path) -> None:
    rng = np.random.default_rng(6)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, 5, 3]
    items = []
    for sid in ("sub-A_ses-M000", "sub-B_ses-M000"):
        mri, pet = rng.random((6, 7, 5)), rng.random((6, 7, 5))
        mp = save_nifti(mri, affine, tmp_path / "in" / f"{sid}_mri.nii.gz", np.float32)
        pp = save_nifti(pet, affine, tmp_path / "in" / f"{sid}_pet.nii.gz", np.float32)
        items.append((sid, mp, pp))
    index = fuse_items("maximum", items, tmp_path / "out")
    assert list(index.columns) == ["subject_id", "fused_path"]
    assert list(index["subject_id"]) == ["sub-A_ses-M000", "sub-B_ses-M000"]
    for (sid, mp, pp), path in zip(items, index["fused_path"], strict=True):
        assert path.endswith(f"{sid}_fused.nii.gz")
        fused, aff = load_nifti(path)
        np.testing.assert_allclose(aff, affine)
        np.testing.assert_allclose(fused, np.maximum(load_nifti(mp)[0], load_nifti(pp)[0]))
        assert nib.load(path).get_data_dtype() == np.float32
    assert not [p for p in (tmp_path / "out").iterdir() if ".part" in p.name]


def test_fuse_items_errors(tmp_path) -> None:
    rng = np.random.default_rng(7)
    a = save_nifti(rng.random((4, 4, 4)), np.eye(4), tmp_path / "a.nii.gz", np.float32)
    b = save_nifti(rng.random((4, 4, 5)), np.eye(4), tmp_path / "b.nii.gz", np.float32)
    shifted = np.eye(4)
    shifted[0, 3] = 5
    c = save_nifti(rng.random((4, 4, 4)), shifted, tmp_path / "c.nii.gz", np.float32)
    with pytest.raises(ValueError, match="shape mismatch.*a.nii.gz"):
        fuse_items("average", [("s1", a, b)], tmp_path / "out")
    with pytest.raises(ValueError, match="same voxel grid"):
        fuse_items("average", [("s1", a, c)], tmp_path / "out")
    with pytest.raises(ValueError, match="duplicate subject_id 's1'"):
        fuse_items("average", [("s1", a, a), ("s1", a, a)], tmp_path / "out")
    with pytest.raises(ValueError, match="empty"):
        fuse_items("average", [], tmp_path / "out")
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse_items("nope", [("s1", a, a)], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        fuse_items("average", [("s1", a, tmp_path / "missing.nii.gz")], tmp_path / "out")
