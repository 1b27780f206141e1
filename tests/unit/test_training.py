"""Tests for fusion3d.training: outputs, checkpoints, exact resume, config checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fusion3d.io import save_nifti
from fusion3d.models import DC2Fusion
from fusion3d.training import calibrate_output_scale, resolve_train_config, train_model

torch.set_num_threads(1)
MODEL = dict(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 1), patch_size=2, window_size=2)


def make_cohort(root, n_subjects=4, size=16):
    """Synthetic model-grid pairs: a ball with different MRI / PET textures."""
    z, y, x = np.mgrid[:size, :size, :size] / size
    ball = ((z - 0.5) ** 2 + (y - 0.5) ** 2 + (x - 0.5) ** 2) < 0.16
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    items = []
    for i in range(n_subjects):
        mri = ball * (0.5 + 0.3 * np.sin(8 * x + i))
        pet = ball * (0.4 + 0.3 * np.cos(6 * y + i))
        m = save_nifti(mri, affine, root / f"s{i}_mri.nii.gz", dtype=np.float32)
        p = save_nifti(pet, affine, root / f"s{i}_pet.nii.gz", dtype=np.float32)
        items.append((f"sub-{i}", m, p))
    return items


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"))


def test_train_writes_outputs(cohort, tmp_path):
    out = tmp_path / "run"
    path = train_model(
        cohort[:3], cohort[3:], out, model_config=MODEL, train_config={"epochs": 2, "lr": 1e-3}
    )
    assert path == out / "model.pt"
    hist = pd.read_csv(out / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2]
    for col in ("lr", "loss", "lncc_mri", "ssim_pet", "l1_mri", "val_psnr", "val_ssim", "seconds"):
        assert col in hist.columns
    assert np.isfinite(hist["loss"].iloc[1:]).all()
    assert hist["lr"].iloc[2] < hist["lr"].iloc[1]  # poly decay
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    for key in ("config", "train_config", "model_state", "optimizer_state", "scheduler_state"):
        assert key in last
    assert last["epoch"] == 2
    assert set(last["rng"]) == {"torch", "numpy", "python"}
    best = torch.load(path, weights_only=True)
    model = DC2Fusion(**best["config"])
    model.load_state_dict(best["model_state"])
    assert best["epoch"] == int(hist.loc[hist["epoch"] > 0, "val_score"].idxmax())


def test_exact_resume(cohort, tmp_path):
    cfg = {"epochs": 3, "lr": 1e-3, "augment": True}
    full = train_model(cohort[:2], cohort[3:], tmp_path / "a", model_config=MODEL, train_config=cfg)
    part = tmp_path / "b"
    train_model(
        cohort[:2],
        cohort[3:],
        part,
        model_config=MODEL,
        train_config={**cfg, "stop_after_epoch": 1},
    )
    assert torch.load(part / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    # resume with a perturbed global RNG: the per-epoch seeding must make it irrelevant
    torch.manual_seed(12345)
    np.random.seed(1)
    train_model(cohort[:2], cohort[3:], part, model_config=MODEL, train_config=cfg)
    sa = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    sb = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert pd.read_csv(part / "history.csv")["epoch"].tolist() == [0, 1, 2, 3]
    assert full.exists()


def test_resume_with_other_config_raises(cohort, tmp_path):
    train_model(cohort[:1], cohort[3:], tmp_path, model_config=MODEL, train_config={"epochs": 1})
    with pytest.raises(ValueError, match="differs"):
        train_model(
            cohort[:1],
            cohort[3:],
            tmp_path,
            model_config={**MODEL, "embed_dim": 16},
            train_config={"epochs": 2},
        )


def test_bad_inputs(cohort, tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        resolve_train_config({"epoch": 3})
    with pytest.raises(ValueError, match="epochs"):
        resolve_train_config({"epochs": 0})
    with pytest.raises(ValueError, match="weights"):
        resolve_train_config({"loss_weights": {"mri": 1.0}})
    with pytest.raises(ValueError, match="divisible"):
        train_model(
            cohort[:1],
            cohort[3:],
            tmp_path,
            model_config={**MODEL, "patch_size": 4},
            train_config={"epochs": 1},
        )
    with pytest.raises(FileNotFoundError):
        train_model(
            [("x", tmp_path / "nope.nii.gz", tmp_path / "nope2.nii.gz")],
            [],
            tmp_path,
            model_config=MODEL,
            train_config={},
        )


def test_calibrate_output_scale():
    torch.manual_seed(0)
    model = DC2Fusion(**MODEL, drop_path_rate=0.0)  # deterministic train-mode forward
    mri, pet = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    before = {k: v.clone() for k, v in model.named_buffers()}
    calibrate_output_scale(model, mri, pet)
    for k, v in model.named_buffers():  # BatchNorm statistics untouched
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        fused = model(mri, pet)
    # F is homogeneous of degree 2 in the last conv: the scale is hit up to BN batch noise
    assert float(fused.abs().mean()) == pytest.approx(float((mri + pet).mean() / 2), rel=1e-3)


def test_train_2d(cohort, tmp_path):
    path = train_model(
        cohort[:2],
        cohort[3:],
        tmp_path,
        model_config={**MODEL, "spatial_dims": 2},
        train_config={"epochs": 1, "slices_per_volume": 3, "batch_size": 2},
    )
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["config"]["spatial_dims"] == 2
    assert np.isfinite(pd.read_csv(tmp_path / "history.csv")["val_score"]).all()


def test_epoch_batches_are_built_one_at_a_time_with_all_draws_first(cohort):
    from fusion3d.training import _batches
    from fusion3d.training_data import load_items

    pairs = load_items(cohort)
    cfg = resolve_train_config({"batch_size": 1, "slices_per_volume": 3})
    model3d = DC2Fusion(spatial_dims=3, **MODEL)
    gen = torch.Generator().manual_seed(5)
    batches = _batches(pairs, model3d, cfg, gen)
    assert not isinstance(batches, list)  # a lazy epoch: no second copy of the volumes
    first = next(batches)
    after_first = gen.get_state()
    rest = list(batches)
    assert torch.equal(gen.get_state(), after_first)  # building batches draws nothing more
    seen = [first, *rest]
    assert len(seen) == len(pairs)  # every subject once per 3D epoch
    got = sorted(float(m.double().sum()) for m, _ in seen)
    assert got == pytest.approx(sorted(float(p.mri.astype(np.float64).sum()) for p in pairs))
    model2d = DC2Fusion(spatial_dims=2, **MODEL)
    slices = list(_batches(pairs, model2d, cfg, torch.Generator().manual_seed(5)))
    assert len(slices) == 3 * len(pairs) and slices[0][0].shape == (1, 1, 16, 16)
