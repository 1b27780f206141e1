"""Each compiled kernel of the prepared metric path against the numpy form it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fusion3d.metrics import fmi, fsim, kernels, published, suite


def _stack(shape=(3, 40, 36), seed=0):
    """Smooth random slices on 0..255, the second one flat (no phase congruency at all)."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), (0, 1.5, 1.5)) * 255
    x[1] = 40.0
    return x


def test_phase_congruency_fast_equals_direct_to_float32_roundoff() -> None:
    x = _stack()
    want = fsim.phase_congruency(x)
    got = fsim.phase_congruency_fast(x)
    assert got.shape == want.shape and got.dtype == np.float64
    assert np.all(got[1] == 0) and np.all(want[1] == 0)  # flat slice: PC 0 in both
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_fsim_from_parts_fast_equals_direct_with_flat_slices() -> None:
    a, b = _stack(seed=1), _stack(seed=2)
    parts_a, parts_b = fsim.fsim_parts(a / 255), fsim.fsim_parts(b / 255)
    want = fsim.fsim_from_parts(parts_a, parts_b)
    got = fsim.fsim_from_parts_fast(parts_a, parts_b)
    assert want[1] == pytest.approx(1.0)  # both flat: the unweighted S_L mean
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_fmi_kernel_equals_window_fmi() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((20, 18))
    cases = {
        "noisy": a + 0.3 * rng.random(a.shape),
        "inverted": 1.0 - a,  # negative correlations of the window pdfs
        "same": a.copy(),  # identical pdfs score 1
        "flat": np.full(a.shape, 0.5),  # uniform pdfs where the feature is constant
    }
    ga = fmi.gradient_feature(a)
    for name, f in cases.items():
        gf = fmi.gradient_feature(f)
        want = fmi.window_fmi(fmi._window_pdfs(ga, 3), fmi._window_pdfs(gf, 3)).mean()
        got = kernels.fmi_windows_mean(ga, gf, 3)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), name
    assert kernels.fmi_windows_mean(ga, ga, 3) == 1.0


def test_mutual_information_kernel_equals_per_slice_histograms() -> None:
    rng = np.random.default_rng(4)
    f = np.round(255 * rng.random((4, 16, 15)))
    a = np.clip(f + np.round(20 * rng.standard_normal(f.shape)), 0, 255)
    a[2] = 9.0  # a constant slice: MI 0
    want = suite.mutual_information_8bit(f, a)
    got = suite.mutual_information_grey(suite._grey(f), suite._grey(a))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert got[2] == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("taps", [3, 9, 17, 31])
def test_valid_filter_kernel_equals_scipy(taps) -> None:
    x = _stack((2, 24, 20), seed=5)
    w = suite._gauss_1d(taps)
    want = suite._filter_valid(x, w)
    got = suite._filter_valid_fast(x[:, ::1, ::1], w)
    assert got.shape == want.shape  # empty when the window is longer than the slice (31)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-10)
    strided = suite._filter_valid_fast(x[:, ::2, ::2], w)  # a decimated pyramid level
    assert strided.shape == suite._filter_valid(x[:, ::2, ::2], w).shape


def test_ssim_kernel_equals_ssim_uniform() -> None:
    f, a = _stack(seed=6), _stack(seed=7)
    parts = suite.prepare_sources(a, _stack(seed=8))
    want = suite.ssim_uniform(f, [a, parts["b"]])
    got = suite._ssim_prepared(f, parts)
    np.testing.assert_allclose(got, want[0] + want[1], rtol=1e-12)


def test_published_phasecong_uses_scipy_fftpack_with_pyfftw_installed() -> None:
    import pyfftw  # noqa: F401 - installed for fsim.phase_congruency_fast
    from phasepack import tools

    assert tools.fft2.__module__ == "scipy.fftpack._basic"
    assert published.phasecong.__module__ == "phasepack.phasecong"


def test_gaussian_filter_3d_fast_equals_scipy_to_float32_roundoff() -> None:
    from fusion3d.metrics import core

    x = np.random.default_rng(9).random((14, 17, 12)).astype(np.float32)
    want = ndimage.gaussian_filter(x, core.SSIM_SIGMA, truncate=core.SSIM_TRUNCATE, mode="reflect")
    got = core.gaussian_filter_3d_fast(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    moments = core.gaussian_moments_fast(x)
    np.testing.assert_allclose(moments[1], core.gaussian_moments(x)[1], rtol=1e-6, atol=0)
