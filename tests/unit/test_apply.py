"""``fusion3d fuse``: any pair with any method, NIfTI volumes and PNG slices, clear errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from fusion3d.apply import fuse_files, read_png, write_png
from fusion3d.baselines import fuse as classic_fuse
from fusion3d.cli import main
from fusion3d.learned.inference import fuse_volume
from fusion3d.learned.models import DC2Fusion

TINY_2D = dict(spatial_dims=2, patch_size=2, embed_dim=4, depths=[1, 1], num_heads=[1, 2])


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    mri = rng.random((16, 16, 8)).astype(np.float32)
    pet = rng.random((16, 16, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(mri, affine), tmp_path / "mri.nii.gz")
    nib.save(nib.Nifti1Image(pet * 7.0, affine), tmp_path / "pet.nii.gz")  # SUVR-like scale
    return tmp_path, mri, pet, affine


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = DC2Fusion(**TINY_2D).eval()
    path = tmp_path / "dcfb2d.pt"
    torch.save(
        {"method": "dcfb", "init_args": model.init_args, "model_state": model.state_dict()}, path
    )
    return path, model


def test_classic_method_on_nifti_keeps_the_affine_and_scales_to_unit(pair):
    tmp, mri, pet, affine = pair
    out = fuse_files("pca", tmp / "mri.nii.gz", tmp / "pet.nii.gz", tmp / "f.nii.gz")
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, affine)
    p = pet * 7.0
    expected = classic_fuse("pca", mri, (p - p.min()) / (p.max() - p.min()))
    np.testing.assert_allclose(img.get_fdata(), expected, atol=1e-6)


def test_network_on_nifti_and_png_equals_inference(pair, checkpoint):
    tmp, mri, pet, _ = pair
    path, model = checkpoint
    assert (
        main(
            [
                "fuse",
                "--method",
                "dcfb2d",
                "--weights",
                str(path),
                str(tmp / "mri.nii.gz"),
                str(tmp / "pet.nii.gz"),
                str(tmp / "f.nii.gz"),
            ]
        )
        == 0
    )
    p = pet * 7.0
    p = (p - p.min()) / (p.max() - p.min())
    with torch.inference_mode():
        expected = fuse_volume(model, mri, p, torch.device("cpu"))
    np.testing.assert_allclose(nib.load(tmp / "f.nii.gz").get_fdata(), expected, atol=1e-5)
    # one 8-bit PNG slice pair -> one PNG
    write_png(mri[:, :, 3], tmp / "m.png")
    write_png(p[:, :, 3], tmp / "p.png")
    fuse_files("dcfb2d", tmp / "m.png", tmp / "p.png", tmp / "f.png", weights=path)
    m8, p8 = read_png(tmp / "m.png"), read_png(tmp / "p.png")
    with torch.inference_mode():
        slice_expected = fuse_volume(model, m8[..., None], p8[..., None], torch.device("cpu"))
    np.testing.assert_array_equal(
        np.asarray(read_png(tmp / "f.png") * 255, dtype=np.uint8),
        np.round(slice_expected[..., 0] * 255).astype(np.uint8),
    )


def test_bad_input_gets_a_clear_error(pair, checkpoint, capsys):
    tmp, mri, _, affine = pair
    path, _ = checkpoint
    nib.save(nib.Nifti1Image(mri[:8], affine), tmp / "small.nii.gz")
    with pytest.raises(ValueError, match=r"small\.nii\.gz.*shapes differ"):
        fuse_files("pca", tmp / "mri.nii.gz", tmp / "small.nii.gz", tmp / "f.nii.gz")
    with pytest.raises(FileNotFoundError, match="gone.nii.gz"):
        fuse_files("pca", tmp / "mri.nii.gz", tmp / "gone.nii.gz", tmp / "f.nii.gz")
    with pytest.raises(ValueError, match="a checkpoint of 'dcfb', not of 'matr'"):
        fuse_files("matr", tmp / "mri.nii.gz", tmp / "pet.nii.gz", tmp / "f.nii.gz", weights=path)
    with pytest.raises(ValueError, match="needs --weights"):
        fuse_files("dcfb2d", tmp / "mri.nii.gz", tmp / "pet.nii.gz", tmp / "f.nii.gz")
    write_png(mri[:, :, 0], tmp / "m.png")
    with pytest.raises(ValueError, match="PNG slices are for the 2D networks"):
        fuse_files("pca", tmp / "m.png", tmp / "m.png", tmp / "f.png")
    with pytest.raises(ValueError, match="one is NIfTI, the other PNG"):
        fuse_files("pca", tmp / "mri.nii.gz", tmp / "m.png", tmp / "f.png")
    assert main(["fuse", "--method", "nope", "a.nii", "b.nii", "c.nii"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
