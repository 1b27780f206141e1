"""Tests of the 2D suite metrics against slow loop references and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import shannon_entropy
from skimage.metrics import structural_similarity

from fusion3d.metrics import suite
from fusion3d.metrics.core import to_8bit


@pytest.fixture(scope="module")
def stacks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit (F, A, B) stacks of two 64x64 MNI crops; B blurred, F a blend."""
    from nilearn import datasets

    vol = datasets.load_mni152_template(resolution=2).get_fdata()
    a = np.stack([vol[18:82, 26:90, 40], vol[18:82, 26:90, 50]])
    b = ndimage.gaussian_filter(a, (0, 2.0, 2.0))
    f = 0.6 * a + 0.4 * b + np.random.default_rng(0).normal(0, 3, a.shape)
    return to_8bit(f), to_8bit(a), to_8bit(b)


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


def test_mi_closed_form_and_loop(stacks):
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


def test_vif_loop(stacks):
    f, a, b = (s[:1] for s in stacks)
    for src in (a, b):
        assert suite.vif_pixel(src, f)[0] == pytest.approx(_vif_loop(src[0], f[0]), rel=1e-7)
    assert suite.vif_pixel(a, a)[0] == pytest.approx(1.0)


def _qabf_loop(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Xydeas-Petrovic Q^{AB/F} with explicit 3x3 Sobel sums and zero padding."""
    kx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    ky = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]

    def sobel(img):
        p = np.pad(img, 1)
        h, w = img.shape
        g, ang = np.empty((h, w)), np.empty((h, w))
        for i in range(h):
            for j in range(w):
                sx = sum(kx[u][v] * p[i + u, j + v] for u in range(3) for v in range(3))
                sy = sum(ky[u][v] * p[i + u, j + v] for u in range(3) for v in range(3))
                g[i, j] = math.hypot(sx, sy)
                ang[i, j] = math.pi / 2 if sx == 0 else math.atan(sy / sx)
        return g, ang

    (ga, aa), (gb, ab), (gf, af) = sobel(a), sobel(b), sobel(f)
    num = den = 0.0
    for i in range(f.shape[0]):
        for j in range(f.shape[1]):
            for g, ang in ((ga, aa), (gb, ab)):
                hi = max(g[i, j], gf[i, j])
                ratio = min(g[i, j], gf[i, j]) / hi if hi > 0 else 0.0
                align = 1 - abs(ang[i, j] - af[i, j]) / (math.pi / 2)
                qg = 0.9994 / (1 + math.exp(-15 * (ratio - 0.5)))
                qa = 0.9879 / (1 + math.exp(-22 * (align - 0.8)))
                num += qg * qa * g[i, j]
                den += g[i, j]
    return num / den


def test_qabf_loop(stacks):
    f, a, b = (s[0, 10:42, 8:40] for s in stacks)
    got = suite.qabf(f[None], a[None], b[None])[0]
    assert got == pytest.approx(_qabf_loop(f, a, b), rel=1e-9)
    same = suite.qabf(a[None], a[None], a[None])[0]
    expected = 0.9994 / (1 + math.exp(-7.5)) * 0.9879 / (1 + math.exp(-4.4))
    assert same == pytest.approx(expected, rel=1e-9)


def test_ssim_and_psnr_suite(stacks):
    f, a, b = stacks
    got = suite.suite_slices(f, a, b)
    for k in range(2):
        expected = sum(
            structural_similarity(
                f[k],
                s[k],
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
            )
            for s in (a, b)
        )
        assert got["ssim"][k] == pytest.approx(expected, rel=1e-9)
        mse = (np.mean((a[k] - f[k]) ** 2) + np.mean((b[k] - f[k]) ** 2)) / 2
        assert got["psnr"][k] == pytest.approx(10 * np.log10(f[k].max() ** 2 / mse), rel=1e-9)
    assert tuple(got) == suite.SUITE_NAMES
    assert suite.psnr_suite(a, a, a)[0] == 100.0
