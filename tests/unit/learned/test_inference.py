"""Tests for fusion3d.learned.inference: NIfTI outputs, affines, 2D slice-wise fusion."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from fusion3d.io import save_nifti
from fusion3d.learned.inference import fuse_items, fuse_volume, load_model
from fusion3d.learned.models import DC2Fusion
from fusion3d.learned.training import calibrate_output_scale, train_model

torch.set_num_threads(1)
MODEL = dict(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 1), patch_size=2, window_size=2)


def make_items(root, n=3, size=16):
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        affine = np.array(
            [[0, 0, 1.5, -20.0 - i], [-1.5, 0, 0, 30.0], [0, 2.0, 0, -7.5], [0, 0, 0, 1]]
        )
        mri = rng.random((size,) * 3).astype(np.float32)
        pet = rng.random((size,) * 3).astype(np.float32)
        m = save_nifti(mri, affine, root / f"m{i}.nii.gz", dtype=np.float32)
        p = save_nifti(pet, affine * 1.0, root / f"p{i}.nii.gz", dtype=np.float32)
        items.append((f"sub-{i}", m, p))
    return items


def save_model(model: DC2Fusion, path, config):
    torch.save({"config": config, "model_state": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("batch_size", [1, 2])
def test_fuse_items_3d(tmp_path, batch_size):
    torch.manual_seed(0)
    items = make_items(tmp_path)
    path = save_model(DC2Fusion(**MODEL), tmp_path / "model.pt", MODEL)
    table = fuse_items(path, items, tmp_path / "fused", device="cpu", batch_size=batch_size)
    assert table.columns.tolist() == ["subject_id", "fused_path"]
    assert table["subject_id"].tolist() == ["sub-0", "sub-1", "sub-2"]
    for (_, mri_path, _), out in zip(items, table["fused_path"], strict=True):
        assert out.endswith("_fused.nii.gz")
        img, src = nib.load(out), nib.load(mri_path)
        assert np.allclose(img.affine, src.affine)
        assert img.get_data_dtype() == np.float32
        data = img.get_fdata()
        assert data.shape == (16, 16, 16)
        assert data.min() >= 0.0 and data.max() <= 1.0


def test_batched_equals_single(tmp_path):
    torch.manual_seed(0)
    items = make_items(tmp_path)
    model = DC2Fusion(**MODEL, drop_path_rate=0.0)
    # bring |F| to ~0.5 so that float noise is not amplified by the L1NW weights
    calibrate_output_scale(model, torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16))
    cfg = {**MODEL, "drop_path_rate": 0.0}
    path = save_model(model, tmp_path / "model.pt", cfg)
    a = fuse_items(path, items, tmp_path / "a", device="cpu", batch_size=1)
    b = fuse_items(path, items, tmp_path / "b", device="cpu", batch_size=3)
    for pa, pb in zip(a["fused_path"], b["fused_path"], strict=True):
        assert np.allclose(nib.load(pa).get_fdata(), nib.load(pb).get_fdata(), atol=1e-4)


def test_2d_slicewise_matches_direct_call(tmp_path):
    torch.manual_seed(0)
    cfg = {**MODEL, "spatial_dims": 2}
    model = DC2Fusion(**cfg).eval()
    mri = np.random.default_rng(1).random((16, 16, 5)).astype(np.float32)
    pet = np.random.default_rng(2).random((16, 16, 5)).astype(np.float32)
    with torch.inference_mode():
        vol = fuse_volume(model, mri, pet, torch.device("cpu"), slice_batch_size=2, clip=False)
        k = 3  # slice along the LAST axis
        direct = model(
            torch.from_numpy(mri[None, None, ..., k]), torch.from_numpy(pet[None, None, ..., k])
        )
    assert vol.shape == mri.shape
    assert np.allclose(vol[..., k], direct[0, 0].numpy(), rtol=1e-4, atol=1e-4)


def test_train_then_fuse_2d(tmp_path):
    items = make_items(tmp_path, n=3)
    path = train_model(
        items[:2],
        items[2:],
        tmp_path / "train",
        model_config={**MODEL, "spatial_dims": 2},
        train_config={"epochs": 1, "slices_per_volume": 2, "augment": False},
    )
    table = fuse_items(path, items, tmp_path / "fused", batch_size=2)
    img = nib.load(table["fused_path"].iloc[0])
    assert img.shape == (16, 16, 16)
    assert np.allclose(img.affine, nib.load(items[0][1]).affine)


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "missing.pt")
    torch.save({"model_state": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="config"):
        load_model(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load"):
        load_model(tmp_path / "junk.pt")


def test_fuse_items_shape_mismatch(tmp_path):
    items = make_items(tmp_path, n=1)
    save_nifti(np.zeros((16, 16, 32), np.float32), np.eye(4), tmp_path / "big.nii.gz")
    path = save_model(DC2Fusion(**MODEL), tmp_path / "model.pt", MODEL)
    with pytest.raises(ValueError, match="differs"):
        fuse_items(
            path, [("x", items[0][1], tmp_path / "big.nii.gz")], tmp_path / "f", device="cpu"
        )


def test_load_model_rebuilds_from_the_checkpoint_alone(tmp_path, monkeypatch):
    """A later change of a constructor default cannot change a loaded model."""
    items = make_items(tmp_path, n=2)
    path = train_model(
        items[:1],
        items[1:],
        tmp_path / "train",
        model_config=MODEL,  # mlp_ratio, qkv_bias, drop_path_rate... left to the defaults
        train_config={"epochs": 1, "augment": False},
    )
    saved = torch.load(path, weights_only=True)
    assert saved["init_args"]["mlp_ratio"] == 4.0 and saved["variant"] == "fixed"
    before = load_model(path)
    defaults = dict(DC2Fusion.__init__.__kwdefaults__)
    monkeypatch.setattr(
        DC2Fusion.__init__,
        "__kwdefaults__",
        {**defaults, "mlp_ratio": 2.0, "qkv_bias": False, "drop_path_rate": 0.5},
    )
    with pytest.raises(RuntimeError):  # the plain config would now build another network
        DC2Fusion(**MODEL).load_state_dict(saved["model_state"])
    after = load_model(path)
    assert getattr(after, "init_args", None) == getattr(before, "init_args", None)
    state_a, state_b = before.state_dict(), after.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    mri, pet = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(before(mri, pet), after(mri, pet))
