"""Tests for fusion3d.learned.losses against closed forms and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fusion3d.learned.losses import FusionLoss, psnr, ssim

torch.set_num_threads(1)


def _img(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_identical_images(spatial_dims):
    a = _img((1, 1) + (16,) * spatial_dims)
    loss, parts = FusionLoss(spatial_dims)(a, a, a)
    assert parts["lncc_mri"] == pytest.approx(-1.0, abs=1e-4)
    assert parts["ssim_mri"] == pytest.approx(0.0, abs=1e-5)
    assert parts["l1_pet"] == 0.0
    # 2 * (-1 + 0 + 0) + 1 * (-1 + 0 + 0)
    assert float(loss) == pytest.approx(-3.0, abs=1e-3)


def test_lncc_is_squared_and_affine_invariant():
    a = _img((1, 1, 12, 12, 12))
    lf = FusionLoss(3, terms=["lncc"])
    # MONAI zero-pads the local windows, so use a pure scaling (keeps the padding at 0)
    assert lf.pair_terms(2.5 * a, a)["lncc"] == pytest.approx(-1.0, abs=1e-3)
    assert lf.pair_terms(-a, a)["lncc"] == pytest.approx(-1.0, abs=1e-3)  # squared NCC
    assert abs(float(lf.pair_terms(_img(a.shape, 1), a)["lncc"])) < 0.3


def test_ssim_of_constants_closed_form():
    c1, c2 = 0.2, 0.7
    a = torch.full((1, 1, 16, 16, 16), c1)
    b = torch.full((1, 1, 16, 16, 16), c2)
    k1 = (0.01 * 1.0) ** 2
    expect = (2 * c1 * c2 + k1) / (c1**2 + c2**2 + k1)  # contrast/structure term = 1
    # float32 E[x^2] - mu^2 leaves ~1e-8 of variance: relative tolerance 1e-3
    assert float(ssim(a, b)) == pytest.approx(expect, rel=1e-3)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)


def test_ssim_matches_skimage_2d():
    a = _img((1, 1, 40, 36))
    b = (a + 0.3 * _img(a.shape, 2)).clamp(0, 1)
    ref = structural_similarity(
        a[0, 0].numpy().astype(np.float64),
        b[0, 0].numpy().astype(np.float64),
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert float(ssim(a, b)) == pytest.approx(ref, abs=1e-4)
    _, parts = FusionLoss(2)(a, b, b)
    assert parts["ssim_mri"] == pytest.approx(1 - ref, abs=1e-4)


def test_l1_and_weights():
    a = _img((1, 1, 16, 16))
    lf = FusionLoss(2, weights={"mri": 3.0, "pet": 0.5}, terms=("l1",))
    loss, parts = lf(a + 0.1, a, a - 0.2)
    assert parts["l1_mri"] == pytest.approx(0.1, abs=1e-5)
    assert parts["l1_pet"] == pytest.approx(0.3, abs=1e-5)
    assert float(loss) == pytest.approx(3.0 * 0.1 + 0.5 * 0.3, abs=1e-5)
    assert set(parts) == {"l1_mri", "l1_pet"}


def test_loss_has_gradient():
    a = _img((1, 1, 16, 16, 16))
    f = (a * 0.5).requires_grad_()
    loss, _ = FusionLoss(3)(f, a, _img(a.shape, 3))
    loss.backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_psnr_closed_form():
    a = _img((2, 1, 8, 8))
    assert torch.allclose(psnr(a + 0.1, a), torch.full((2,), 20.0), atol=1e-3)
    assert math.isinf(float(psnr(a, a)[0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(weights={"mri": 1.0}), "weights"),
        (dict(terms=("lncc", "mse")), "terms"),
        (dict(terms=()), "terms"),
        (dict(spatial_dims=1), "spatial_dims"),
    ],
)
def test_bad_loss_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusionLoss(**kwargs)


def test_bad_loss_inputs():
    lf = FusionLoss(3)
    with pytest.raises(ValueError, match="differ in shape"):
        lf(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 12, 16, 16))
    small = torch.rand(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="SSIM needs"):
        lf(small, small, small)


@pytest.mark.parametrize("shape", [(2, 1, 16, 13, 12), (1, 1, 20, 17)])
def test_separable_ssim_matches_monai(shape):
    from monai.losses import SSIMLoss

    a = _img(shape)
    b = (0.7 * a + 0.3 * _img(shape, 5)).clamp(0, 1)
    ref = SSIMLoss(spatial_dims=len(shape) - 2, data_range=1.0, win_size=11, kernel_sigma=1.5)
    _, parts = FusionLoss(len(shape) - 2, terms=("ssim",))(a, b, b)
    assert parts["ssim_mri"] == pytest.approx(float(ref(a, b)), abs=1e-5)
