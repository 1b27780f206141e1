"""The 2D suite against the documented evaluator conventions, independent libraries and loops.

Expected values come from the formulas stated in :mod:`fusion3d.metrics.suite` written
out as loops, from scikit-image / scikit-learn / scipy.signal, or in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, signal
from skimage.measure import shannon_entropy
from skimage.metrics import structural_similarity

from fusion3d.metrics import PSNR_MAX_DB, SUITE_NAMES, compute_metrics, suite


@pytest.fixture(scope="module")
def stacks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit (F, A, B) float stacks of two 64x64 MNI crops; B blurred, F a noisy blend.

    One fixed scale (max 230), so the images do not span 0..255.
    """
    from nilearn import datasets

    vol = datasets.load_mni152_template(resolution=2).get_fdata()
    vol = vol / vol.max() * 230.0
    a = np.stack([vol[18:82, 26:90, 40], vol[18:82, 26:90, 50]])
    b = ndimage.gaussian_filter(a, (0, 2.0, 2.0))
    f = 0.6 * a + 0.4 * b + np.random.default_rng(0).normal(0, 3, a.shape)
    return tuple(np.clip(np.round(x), 0, 255) for x in (f, a, b))


# ------------------------------------------------------------------ single-image metrics
def test_entropy_sd_against_references(stacks):
    f, _, _ = stacks
    for k in range(2):
        assert suite.entropy(f)[k] == pytest.approx(shannon_entropy(f[k]), rel=1e-9)
        assert suite.standard_deviation(f)[k] == pytest.approx(f[k].std(), rel=1e-12)
    half = np.zeros((1, 4, 4))
    half[0, :2] = 255
    assert suite.entropy(half)[0] == pytest.approx(1.0)


def test_sf_ag_loops(stacks):
    f = stacks[0][0]
    h, w = f.shape
    rows = sum((f[i, j] - f[i, j - 1]) ** 2 for i in range(h) for j in range(1, w)) / (h * (w - 1))
    cols = sum((f[i, j] - f[i - 1, j]) ** 2 for i in range(1, h) for j in range(w)) / ((h - 1) * w)
    assert suite.spatial_frequency(f[None])[0] == pytest.approx(math.sqrt(rows + cols), rel=1e-9)

    def d(i, j, axis):
        n = f.shape[axis]
        k = i if axis == 0 else j
        at = (lambda t: f[t, j]) if axis == 0 else (lambda t: f[i, t])
        if k == 0:
            return at(1) - at(0)
        if k == n - 1:
            return at(n - 1) - at(n - 2)
        return (at(k + 1) - at(k - 1)) / 2

    total = sum(
        math.sqrt((d(i, j, 1) ** 2 + d(i, j, 0) ** 2) / 2) for i in range(h) for j in range(w)
    )
    assert suite.average_gradient(f[None])[0] == pytest.approx(total / (h * w), rel=1e-9)


# ------------------------------------------------------------------ two-image metrics
def test_mi_closed_form_loop_and_sklearn(stacks):
    half = np.zeros((1, 4, 4))
    half[0, :2] = 255
    assert suite.mutual_information_8bit(half, half)[0] == pytest.approx(math.log(2))
    f, a, _ = stacks
    counts: dict[tuple[int, int], int] = {}
    for x, y in zip(f[0].ravel().astype(int), a[0].ravel().astype(int), strict=True):
        counts[(x, y)] = counts.get((x, y), 0) + 1
    n = f[0].size
    pf = np.bincount(f[0].ravel().astype(int), minlength=256) / n
    pa = np.bincount(a[0].ravel().astype(int), minlength=256) / n
    mi = sum(c / n * math.log(c / n / (pf[x] * pa[y])) for (x, y), c in counts.items())
    assert suite.mutual_information_8bit(f, a)[0] == pytest.approx(mi, rel=1e-9)
    skm = pytest.importorskip("sklearn.metrics")
    assert suite.mutual_information_8bit(f, a)[1] == pytest.approx(
        skm.mutual_info_score(f[1].ravel(), a[1].ravel()), rel=1e-9
    )


def test_scd_loop(stacks):
    f, a, b = (s[1] for s in stacks)

    def corr(x, y):
        x, y = x.ravel(), y.ravel()
        mx, my = sum(x) / len(x), sum(y) / len(y)
        num = sum((p - mx) * (q - my) for p, q in zip(x, y, strict=True))
        den = math.sqrt(sum((p - mx) ** 2 for p in x) * sum((q - my) ** 2 for q in y))
        return num / den

    expected = corr(f - b, a) + corr(f - a, b)
    assert suite.scd(f[None], a[None], b[None])[0] == pytest.approx(expected, rel=1e-9)


def _vif_loop(ref: np.ndarray, dist: np.ndarray) -> float:
    """VIFp with a 2D window and explicit loops over output pixels."""
    eps, sn = 1e-10, 2.0
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        x = np.arange(n) - (n - 1) / 2
        win = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (n / 5) ** 2))
        win /= win.sum()

        def valid(img, win=win, n=n):
            h, w = img.shape[0] - n + 1, img.shape[1] - n + 1
            out = np.empty((h, w))
            for i in range(h):
                for j in range(w):
                    out[i, j] = (img[i : i + n, j : j + n] * win).sum()
            return out

        if scale > 1:
            ref, dist = valid(ref)[::2, ::2], valid(dist)[::2, ::2]
        mu1, mu2 = valid(ref), valid(dist)
        s1 = valid(ref * ref) - mu1**2
        s2 = valid(dist * dist) - mu2**2
        s12 = valid(ref * dist) - mu1 * mu2
        for i in range(mu1.shape[0]):
            for j in range(mu1.shape[1]):
                v1, v2, v12 = max(s1[i, j], 0.0), max(s2[i, j], 0.0), s12[i, j]
                g = v12 / (v1 + eps)
                sv = v2 - g * v12
                if v1 < eps:
                    g, sv, v1 = 0.0, v2, 0.0
                if v2 < eps:
                    g, sv = 0.0, 0.0
                if g < 0:
                    sv, g = v2, 0.0
                sv = max(sv, eps)
                num += math.log10(1 + g * g * v1 / (sv + sn))
                den += math.log10(1 + v1 / sn)
    return num / den


def test_vif_loop_identity_and_flat_reference(stacks):
    f, a, b = (s[:1] for s in stacks)
    for src in (a, b):
        assert suite.vif_pixel(src, f)[0] == pytest.approx(_vif_loop(src[0], f[0]), rel=1e-7)
    assert suite.vif_pixel(a, a)[0] == pytest.approx(1.0)
    # A reference without variance: num = den = 0, which the evaluator turns into 1.
    assert suite.vif_pixel(np.full_like(a, 40.0), f)[0] == 1.0


# Sobel kernels of the evaluator, applied by true convolution (scipy.signal.convolve2d).
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)


def _sobel_conv2d(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strength and orientation as documented, with scipy.signal.convolve2d 'same'."""
    sx = signal.convolve2d(img, SOBEL_X, mode="same")
    sy = signal.convolve2d(img, SOBEL_Y, mode="same")
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.where(sx == 0, math.pi / 2, np.arctan(sy / sx))
    return np.hypot(sx, sy), ang


def _qabf_loop(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Joint Q^{AB/F} as documented (ratio g_F where g_A == g_F), one pixel at a time."""
    (ga, aa), (gb, ab), (gf, af) = _sobel_conv2d(a), _sobel_conv2d(b), _sobel_conv2d(f)
    num = den = 0.0
    for i in range(f.shape[0]):
        for j in range(f.shape[1]):
            for g, ang in ((ga, aa), (gb, ab)):
                gs, gfu = g[i, j], gf[i, j]
                ratio = gfu / gs if gs > gfu else gs / gfu if gs < gfu else gfu
                align = 1 - abs(ang[i, j] - af[i, j]) / (math.pi / 2)
                qg = 0.9994 / (1 + math.exp(-15 * (ratio - 0.5)))
                qa = 0.9879 / (1 + math.exp(-22 * (align - 0.8)))
                num += qg * qa * gs
                den += gs
    return num / den


def test_qabf_loop(stacks):
    f, a, b = (s[0, 10:42, 8:40] for s in stacks)
    got = suite.qabf(f[None], a[None], b[None])[0]
    assert got == pytest.approx(_qabf_loop(f, a, b), rel=1e-9)


def test_qabf_orientation_sign_follows_the_convolution():
    # Pixel (1, 1): A has a pure vertical gradient (S_x = 0 -> pi/2); F adds a horizontal
    # one. With S_x = conv2d(., SOBEL_X) the angles differ by less than with the
    # correlation sign, so the two sign conventions give different scores.
    a = np.zeros((5, 5))
    a[2:, :] = 10.0
    f = a.copy()
    f[:, 3:] += 4.0
    got = suite.qabf(f[None], a[None], a[None])[0]
    assert got == pytest.approx(_qabf_loop(f, a, a), rel=1e-12)
    mirrored = _qabf_loop(f[:, ::-1], a[:, ::-1], a[:, ::-1])
    assert abs(got - mirrored) > 1e-3


def test_qabf_identical_images_closed_form(stacks):
    # F == A == B: g_A == g_F everywhere, so the ratio is g_F itself (the evaluator's
    # rule, not 1) and the orientation term is 1.
    a = stacks[1][0]
    g, _ = _sobel_conv2d(a)
    qg = 0.9994 / (1 + np.exp(-15 * (g - 0.5)))
    qa = 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))
    expected = float((qg * qa * g).sum() / g.sum())
    assert suite.qabf(a[None], a[None], a[None])[0] == pytest.approx(expected, rel=1e-12)
    assert suite.qabf(*(np.zeros((1, 8, 8)),) * 3)[0] == 0.0


def test_ssim_is_skimage_default_with_8bit_range(stacks):
    f, a, b = stacks
    got = suite.suite_slices(f, a, b)["ssim"]
    for k in range(2):
        expected = sum(structural_similarity(f[k], s[k], data_range=255) for s in (a, b))
        assert got[k] == pytest.approx(expected, rel=1e-9)
        # the evaluator's own call, ssim(F, A), on uint8 images takes the same range
        u8 = [x[k].astype(np.uint8) for x in (f, a, b)]
        uint8_call = structural_similarity(u8[0], u8[1]) + structural_similarity(u8[0], u8[2])
        assert got[k] == pytest.approx(uint8_call, rel=1e-9)


def test_psnr_fused_peak_over_mean_mse(stacks):
    f, a, b = stacks
    got = suite.psnr_suite(f, a, b)
    for k in range(2):
        mse = (np.mean((a[k] - f[k]) ** 2) + np.mean((b[k] - f[k]) ** 2)) / 2
        assert got[k] == pytest.approx(10 * np.log10(f[k].max() ** 2 / mse), rel=1e-12)
    assert suite.psnr_suite(a, a, a)[0] == PSNR_MAX_DB


def test_fused_equal_to_both_sources_closed_form(stacks):
    a = stacks[1][:1]
    out = suite.suite_slices(a, a, a)
    assert tuple(out) == SUITE_NAMES
    h_nats = shannon_entropy(a[0]) * math.log(2)
    assert out["mi"][0] == pytest.approx(2 * h_nats, rel=1e-9)  # MI(A, A) = H(A)
    assert out["ssim"][0] == pytest.approx(2.0)
    assert out["vif"][0] == pytest.approx(2.0)
    assert out["scd"][0] == 0.0  # F - B = 0 has no variance: counts 0
    assert out["psnr"][0] == PSNR_MAX_DB


def test_fused_equal_to_one_source(stacks):
    _, a, b = (s[1:] for s in stacks)
    out = suite.suite_slices(a, a, b)  # F = A
    assert out["ssim"][0] == pytest.approx(1.0 + structural_similarity(a[0], b[0], data_range=255))
    assert out["mi"][0] == pytest.approx(
        shannon_entropy(a[0]) * math.log(2) + suite.mutual_information_8bit(a, b)[0]
    )
    assert out["vif"][0] == pytest.approx(1.0 + suite.vif_pixel(b, a)[0])
    mse = np.mean((a[0] - b[0]) ** 2) / 2  # MSE(A, F) = 0
    assert out["psnr"][0] == pytest.approx(10 * math.log10(a[0].max() ** 2 / mse), rel=1e-12)


# ------------------------------------------------------------------ input scale
def _shifted_8bit(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (F, A, B) 24x24 images with values 40..200, far from 0..255 end to end."""
    a = ndimage.gaussian_filter(rng.uniform(0, 1, (24, 24)), 2)
    a = 40 + 160 * (a - a.min()) / (a.max() - a.min())
    b = ndimage.gaussian_filter(a, 1.5) * 0.8
    f = 0.5 * (a + b) + rng.normal(0, 2, a.shape)
    return tuple(np.clip(np.round(x), 0, 255).astype(np.uint8) for x in (f, a, b))


def test_uint8_is_scored_as_it_is():
    f, a, b = _shifted_8bit(np.random.default_rng(1))
    out = compute_metrics(f, a, b, protocol="suite2d")
    direct = suite.suite_slices(*(x[None].astype(np.float64) for x in (f, a, b)))
    assert out == pytest.approx({k: float(v[0]) for k, v in direct.items()}, rel=1e-12)
    assert out["sd"] == pytest.approx(float(np.std(f.astype(np.float64))), rel=1e-12)
    assert out["en"] == pytest.approx(shannon_entropy(f), rel=1e-12)
    mse = (np.mean((a - f.astype(float)) ** 2) + np.mean((b - f.astype(float)) ** 2)) / 2
    assert out["psnr"] == pytest.approx(10 * math.log10(float(f.max()) ** 2 / mse), rel=1e-12)
    # the same values as floats (integer-valued, > 1) are 8-bit too
    assert compute_metrics(*(x.astype(float) for x in (f, a, b)), protocol="suite2d") == out


def test_unit_floats_use_one_fixed_scale():
    f, a, b = (x / 255.0 for x in _shifted_8bit(np.random.default_rng(2)))
    out = compute_metrics(f, a, b, protocol="suite2d")
    eight = [np.round(255 * x)[None] for x in (f, a, b)]  # round(255 x), nothing per image
    expected = suite.suite_slices(*eight)
    assert out == pytest.approx({k: float(v[0]) for k, v in expected.items()}, rel=1e-12)
    assert out["sd"] == pytest.approx(float(np.std(eight[0])), rel=1e-12)


def test_fused_image_that_lost_brightness_scores_worse():
    f, a, b = (x / 255.0 for x in _shifted_8bit(np.random.default_rng(3)))
    dark = 0.5 * f
    good = compute_metrics(f, a, b, protocol="suite2d")
    bad = compute_metrics(dark, a, b, protocol="suite2d")
    assert bad["psnr"] < good["psnr"] - 3
    assert bad["ssim"] < good["ssim"] - 0.1
    assert (
        bad["sd"] == pytest.approx(float(np.std(np.round(255 * dark))), rel=1e-12)
        and bad["sd"] < 0.6 * good["sd"]
    )

    # A per-image min-max rescale (the old convention) would make both fused images
    # the same picture, hiding the loss.
    def minmax(x):
        return np.round(255 * (x - x.min()) / (x.max() - x.min()))

    assert np.abs(minmax(dark) - minmax(f)).max() <= 1


def test_volume_scale_is_shared_across_slices():
    rng = np.random.default_rng(4)
    vol = np.stack([x / 255.0 for x in _shifted_8bit(rng)], axis=-1)  # slice 0 ...
    vol = np.stack([vol, 0.3 * vol], axis=-1)  # ... and a dimmer slice 1: (24, 24, 3, 2)
    f, a, b = (vol[:, :, i, :] for i in range(3))
    out = compute_metrics(f, a, b, protocol="suite2d")
    per_slice = [
        suite.suite_slices(*(np.round(255 * x[:, :, k])[None] for x in (f, a, b))) for k in range(2)
    ]
    assert out["sd"] == pytest.approx(
        (per_slice[0]["sd"][0] + per_slice[1]["sd"][0]) / 2, rel=1e-12
    )
    assert per_slice[1]["sd"][0] < 0.5 * per_slice[0]["sd"][0]


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ({"fused": np.full((16, 16), 1.5)}, "fused has values in"),
        ({"mri": np.full((16, 16), -0.2)}, "mri has values in"),
        ({"pet": np.arange(256.0).reshape(16, 16) * 1.01}, "pet has values in"),
        ({"fused": np.full((16, 16), 300, np.int16)}, "fused is integer"),
        ({"fused": np.full((16, 16), 200.0)}, "different scales"),
    ],
)
def test_bad_scales_are_errors(images, match):
    rng = np.random.default_rng(5)
    args = {k: rng.uniform(0.1, 0.9, (16, 16)) for k in ("fused", "mri", "pet")}
    args.update(images)
    with pytest.raises(ValueError, match=match):
        suite.shared_8bit(args["fused"], args["mri"], args["pet"])


def test_round_off_beyond_unit_is_clipped():
    x = np.linspace(0, 1, 256).reshape(16, 16)
    f8, a8, _ = suite.shared_8bit(x + 1e-9, x - 1e-9, x)
    assert f8.max() == 255 and a8.min() == 0
    assert np.array_equal(f8, np.round(255 * x))
    u8, *_ = suite.shared_8bit(*(np.full((4, 4), 1, np.uint8),) * 3)
    assert u8.max() == 1  # an integer dtype is 8-bit even when it only holds 0 and 1
