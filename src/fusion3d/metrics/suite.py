"""The 2D fusion field's metric suite (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, PSNR).

All functions take 8-bit-valued float stacks of shape ``(S, H, W)`` (see
:func:`fusion3d.metrics.core.to_8bit`) and return one value per slice, shape ``(S,)``.
Definitions (as used by CDDFuse-style evaluations):

- ``en``: entropy (bits) of the 256-bin grey-level histogram of F.
- ``sd``: standard deviation of F. ``sf``: ``sqrt(mean(dx^2) + mean(dy^2))`` with
  forward differences. ``ag``: ``mean(sqrt((gx^2 + gy^2) / 2))`` with ``np.gradient``.
- ``mi``: ``MI(F, A) + MI(F, B)`` in nats from 256x256 grey-level histograms.
- ``scd``: ``corr(F - B, A) + corr(F - A, B)`` (a zero-variance term counts 0).
- ``vif``: pixel-domain VIF (Sheikh & Bovik 2006, ``vifp_mscale``), 4 scales with
  Gaussian windows of 17/9/5/3 px (sigma N/5), sigma_n^2 = 2, 'valid' filtering,
  ``VIF(A, F) + VIF(B, F)``; a slice whose source has no variance scores 0 for it.
- ``qabf``: Xydeas & Petrovic with Sobel strength/orientation (zero padding),
  Gamma_g 0.9994, kappa_g -15, D_g 0.5, Gamma_a 0.9879, kappa_a -22, D_a 0.8. The
  strength ratio is ``min(g_A, g_F) / max(g_A, g_F)`` (1 where equal, 0 where both are
  0); the widely copied MATLAB code sets it to ``g_F`` where ``g_A == g_F``, a quirk
  we do not reproduce. Zero total source gradient scores 0.
- ``ssim``: ``SSIM(F, A) + SSIM(F, B)``, Gaussian window (11, sigma 1.5), data range 255.
- ``psnr``: ``10 log10(max(F)^2 / mean(MSE(A, F), MSE(B, F)))``, clipped like
  :data:`fusion3d.metrics.core.PSNR_MAX_DB`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusion3d.metrics.core import gaussian_moments, psnr_from_mse, ssim_slices

SUITE_NAMES = ("en", "sd", "sf", "ag", "mi", "scd", "vif", "qabf", "ssim", "psnr")

VIF_SIGMA_N_SQ = 2.0
VIF_EPS = 1e-10
QABF_PARAMS = {"tg": 0.9994, "kg": -15.0, "dg": 0.5, "ta": 0.9879, "ka": -22.0, "da": 0.8}


def entropy(f: np.ndarray) -> np.ndarray:
    """Entropy in bits of the 256-bin histogram (values 0..255) of each slice."""
    s = len(f)
    idx = np.clip(f, 0, 255).astype(np.int64).reshape(s, -1) + 256 * np.arange(s)[:, None]
    counts = np.bincount(idx.ravel(), minlength=256 * s).reshape(s, 256).astype(np.float64)
    p = counts / counts.sum(axis=1, keepdims=True)
    return -(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=1)


def standard_deviation(f: np.ndarray) -> np.ndarray:
    """Population standard deviation of each slice."""
    return f.std(axis=(1, 2))


def spatial_frequency(f: np.ndarray) -> np.ndarray:
    """``sqrt(mean(row differences^2) + mean(column differences^2))`` per slice."""
    dx = np.diff(f, axis=2)
    dy = np.diff(f, axis=1)
    return np.sqrt((dx**2).mean(axis=(1, 2)) + (dy**2).mean(axis=(1, 2)))


def average_gradient(f: np.ndarray) -> np.ndarray:
    """``mean(sqrt((gx^2 + gy^2) / 2))`` with central differences inside, one-sided at edges."""
    gy, gx = np.gradient(f, axis=(1, 2))
    return np.sqrt((gx**2 + gy**2) / 2.0).mean(axis=(1, 2))


def mutual_information_8bit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MI in nats of two 0..255 stacks from per-slice 256x256 joint histograms."""
    s = len(a)
    ia = np.clip(a, 0, 255).astype(np.int64).reshape(s, -1)
    ib = np.clip(b, 0, 255).astype(np.int64).reshape(s, -1)
    out = np.empty(s)
    for k in range(s):  # one bincount per slice keeps memory at 256^2 counts
        joint = np.bincount(ia[k] * 256 + ib[k], minlength=65536).reshape(256, 256)
        p = joint / joint.sum()
        pa = p.sum(axis=1, keepdims=True)
        pb = p.sum(axis=0, keepdims=True)
        nz = p > 0
        out[k] = float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())
    return out


def _corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx = x - x.mean(axis=(1, 2), keepdims=True)
    dy = y - y.mean(axis=(1, 2), keepdims=True)
    den = np.sqrt((dx**2).sum(axis=(1, 2)) * (dy**2).sum(axis=(1, 2)))
    num = (dx * dy).sum(axis=(1, 2))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of the correlations of differences, ``corr(F - B, A) + corr(F - A, B)``."""
    return _corr(f - b, a) + _corr(f - a, b)


def _gauss_1d(n: int) -> np.ndarray:
    sd = n / 5.0
    x = np.arange(n) - (n - 1) / 2.0
    w = np.exp(-(x**2) / (2 * sd**2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of every slice with the 1D window ``w`` on both axes."""
    r = len(w) // 2
    y = ndimage.correlate1d(x, w, axis=1, mode="constant")[:, r : x.shape[1] - r]
    return ndimage.correlate1d(y, w, axis=2, mode="constant")[:, :, r : x.shape[2] - r]


def _vif_levels(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per scale: (level image, window, local mean, local variance) of the VIF pyramid."""
    levels = []
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        w = _gauss_1d(n)
        if scale > 1:
            x = _filter_valid(x, w)[:, ::2, ::2]
        mu = _filter_valid(x, w)
        var = np.maximum(_filter_valid(x * x, w) - mu * mu, 0.0)
        levels.append((x, w, mu, var))
    return levels


def vif_pixel_multi(refs: list[np.ndarray], dist: np.ndarray) -> list[np.ndarray]:
    """Pixel-domain multi-scale VIF of ``dist`` against each stack in ``refs``, per slice.

    The distorted image's pyramid and local statistics are computed once.
    """
    eps = VIF_EPS
    dist_levels = _vif_levels(np.asarray(dist, np.float64))
    out = []
    for ref in refs:
        num = np.zeros(len(dist))
        den = np.zeros(len(dist))
        for (r, w, mu1, s1), (d, _, mu2, s2) in zip(
            _vif_levels(np.asarray(ref, np.float64)), dist_levels, strict=True
        ):
            s12 = _filter_valid(r * d, w) - mu1 * mu2
            g = s12 / (s1 + eps)
            sv = s2 - g * s12
            low1 = s1 < eps
            g = np.where(low1, 0.0, g)
            sv = np.where(low1, s2, sv)
            s1 = np.where(low1, 0.0, s1)
            low2 = s2 < eps
            g = np.where(low2, 0.0, g)
            sv = np.where(low2, 0.0, sv)
            neg = g < 0
            sv = np.where(neg, s2, sv)
            g = np.where(neg, 0.0, g)
            sv = np.maximum(sv, eps)
            num += np.log10(1 + g * g * s1 / (sv + VIF_SIGMA_N_SQ)).sum(axis=(1, 2))
            den += np.log10(1 + s1 / VIF_SIGMA_N_SQ).sum(axis=(1, 2))
        out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0))
    return out


def vif_pixel(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Pixel-domain multi-scale VIF of ``dist`` against ``ref``, per slice."""
    return vif_pixel_multi([ref], dist)[0]


def _sobel_strength_angle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength and orientation ``atan(sy / sx)`` (pi/2 where sx = 0)."""
    sx = ndimage.correlate1d(x, [-1.0, 0.0, 1.0], axis=2, mode="constant")
    sx = ndimage.correlate1d(sx, [1.0, 2.0, 1.0], axis=1, mode="constant")
    sy = ndimage.correlate1d(x, [-1.0, 0.0, 1.0], axis=1, mode="constant")
    sy = ndimage.correlate1d(sy, [1.0, 2.0, 1.0], axis=2, mode="constant")
    strength = np.sqrt(sx**2 + sy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.where(sx == 0, np.pi / 2, np.arctan(sy / np.where(sx == 0, 1.0, sx)))
    return strength, angle


def _edge_preservation(ga, aa, gf, af) -> np.ndarray:
    p = QABF_PARAMS
    hi = np.maximum(ga, gf)
    ratio = np.where(hi > 0, np.minimum(ga, gf) / np.where(hi > 0, hi, 1.0), 0.0)
    align = 1.0 - np.abs(aa - af) / (np.pi / 2)
    qg = p["tg"] / (1.0 + np.exp(p["kg"] * (ratio - p["dg"])))
    qa = p["ta"] / (1.0 + np.exp(p["ka"] * (align - p["da"])))
    return qg * qa


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Xydeas-Petrovic edge-preservation ``Q^{AB/F}`` per slice."""
    ga, aa = _sobel_strength_angle(a)
    gb, ab = _sobel_strength_angle(b)
    gf, af = _sobel_strength_angle(f)
    num = (_edge_preservation(ga, aa, gf, af) * ga + _edge_preservation(gb, ab, gf, af) * gb).sum(
        axis=(1, 2)
    )
    den = (ga + gb).sum(axis=(1, 2))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def psnr_suite(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``10 log10(max(F)^2 / mean(MSE(A, F), MSE(B, F)))`` per slice."""
    mse = (((a - f) ** 2).mean(axis=(1, 2)) + ((b - f) ** 2).mean(axis=(1, 2))) / 2.0
    return psnr_from_mse(f.max(axis=(1, 2)) ** 2, mse)


def suite_slices(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Every suite metric for 8-bit stacks ``F`` (fused), ``A``, ``B``; values ``(S,)``."""
    vif_a, vif_b = vif_pixel_multi([a, b], f)
    moments_f = gaussian_moments(f, (1, 2))
    return {
        "en": entropy(f),
        "sd": standard_deviation(f),
        "sf": spatial_frequency(f),
        "ag": average_gradient(f),
        "mi": mutual_information_8bit(f, a) + mutual_information_8bit(f, b),
        "scd": scd(f, a, b),
        "vif": vif_a + vif_b,
        "qabf": qabf(f, a, b),
        "ssim": ssim_slices(f, a, 255.0, moments_f) + ssim_slices(f, b, 255.0, moments_f),
        "psnr": psnr_suite(f, a, b),
    }
