"""The 2D fusion field's metric suite, as MMIF-CDDFuse's ``utils/Evaluator.py`` computes it.

The 2D fusion literature reports EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM and PSNR with
that evaluator on 8-bit grey images. This module reproduces it: on integer images in
0..255 every metric equals the evaluator's to 4e-14 relative when the evaluator gets
float64 images, and to its own float32 round-off when it gets float32 images as its
``test_MIF.py`` does (at most 2.2e-7 relative; SCD, whose values can be near 0,
3.1e-6 relative, about 1e-7 absolute). Measured on the MRI_PET, MRI_CT and MRI_SPECT
pairs of its repository with ``benchmarks/bench_suite_agreement.py``. Our code is
written from the definitions below; nothing of the evaluator is imported.

**Input scale** (:func:`shared_8bit`). The metrics are defined on 0..255 grey values.
8-bit inputs (an integer dtype, or floats that are all integers in 0..255) are scored
as they are. Float images whose values all lie in [0, 1] (the model grid) are put on
0..255 by one fixed map shared by the fused image and both sources,
``round(255 x)`` (round half to even), never per image or per slice, so a fused image
that lost brightness scores lower. Values up to 1e-6 outside [0, 1] are clipped
(float round-off); anything else (floats outside [0, 1] that are not 8-bit integers,
or one image on each scale) is an error naming the image and its range.

**Conventions** (those of the evaluator; ``F`` fused, ``A`` and ``B`` the sources):

- ``en``: entropy in bits of the grey-level histogram of F (256 bins).
- ``sd``: population standard deviation of F.
- ``sf``: ``sqrt(mean(dx^2) + mean(dy^2))`` of forward differences along rows and
  columns (each mean over its own ``H (W-1)`` or ``(H-1) W`` differences).
- ``ag``: ``mean(sqrt((gx^2 + gy^2) / 2))`` over all pixels, central differences
  ``/ 2`` inside and one-sided differences on the border rows and columns
  (``np.gradient``).
- ``mi``: ``MI(F, A) + MI(F, B)`` in nats from the joint grey-level histogram
  (scikit-learn's ``mutual_info_score`` of the flattened images).
- ``scd``: ``corr(F - B, A) + corr(F - A, B)`` (Pearson); a zero-variance term
  counts 0 (the evaluator gives NaN).
- ``vif``: ``VIF(A, F) + VIF(B, F)``, pixel-domain VIF (Sheikh & Bovik 2006,
  ``vifp_mscale``): 4 scales, Gaussian windows of 17/9/5/3 px with sigma N/5,
  ``sigma_n^2 = 2``, eps 1e-10, 'valid' filtering, 2x decimation after filtering;
  ``num / den`` summed over the scales. A source without any local variance
  (``den = 0``, so ``num = 0``) scores 1, as the evaluator's NaN -> 1 rule gives.
- ``qabf``: Xydeas & Petrovic ``Q^{AB/F}`` in its joint form,
  ``sum(Q^AF g_A + Q^BF g_B) / sum(g_A + g_B)``. Edge strength and orientation
  from the evaluator's Sobel kernels applied by true 2D convolution with zero
  padding ('same'): ``S_x = conv(x, [[-1,0,1],[-2,0,2],[-1,0,1]])``,
  ``S_y = conv(x, [[1,2,1],[0,0,0],[-1,-2,-1]])``, ``g = sqrt(S_x^2 + S_y^2)``,
  ``alpha = atan(S_y / S_x)`` (pi/2 where ``S_x = 0``). Strength ratio
  ``g_F / g_A`` where ``g_A > g_F``, ``g_A / g_F`` where ``g_A < g_F`` and, as the
  evaluator (and the MATLAB code it follows) does, ``g_F`` where ``g_A == g_F``;
  orientation term ``1 - |alpha_A - alpha_F| / (pi/2)``; Gamma_g 0.9994,
  kappa_g -15, D_g 0.5, Gamma_a 0.9879, kappa_a -22, D_a 0.8. No source gradient at
  all scores 0 (the evaluator gives NaN).
- ``ssim``: ``SSIM(F, A) + SSIM(F, B)`` with scikit-image's ``structural_similarity``
  defaults, which the evaluator calls: a 7x7 uniform window, sample covariance
  (``49 / 48``), ``reflect`` borders, mean over the map less a 3-px border, K1 0.01,
  K2 0.03, and **data range 255**. The evaluator passes no data range, so its value
  depends on the scikit-image version: 255 for uint8 input in every version; for the
  float32 images its ``test_MIF.py`` passes, 2 in scikit-image <= 0.19 and an error
  from 0.20 on. We use 255, the 8-bit range.
- ``psnr``: ``10 log10(max(F)^2 / MSE)`` with ``MSE = (MSE(A, F) + MSE(B, F)) / 2``:
  the fused image's maximum as the peak. Identical images give
  :data:`fusion3d.metrics.core.PSNR_MAX_DB` instead of infinity (and the value is
  clipped to +-that).

All metric functions take float stacks of shape ``(S, H, W)`` on 0..255 and return
one value per slice, shape ``(S,)``; everything is computed in float64 (the
evaluator, fed float32 images, computes SD, SF, AG, SCD, Qabf and PSNR in float32:
that is where the differences above 1e-13 come from).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusion3d.metrics import kernels
from fusion3d.metrics.core import psnr_from_mse
from fusion3d.metrics.names import SUITE_NAMES  # noqa: F401 - re-exported

#: Tolerance for float round-off outside [0, 1] before the shared 0..255 map.
UNIT_TOLERANCE = 1e-6
VIF_SIGMA_N_SQ = 2.0
VIF_EPS = 1e-10
QABF_PARAMS = {"tg": 0.9994, "kg": -15.0, "dg": 0.5, "ta": 0.9879, "ka": -22.0, "da": 0.8}
SSIM_WIN = 7
SSIM_DATA_RANGE = 255.0


def _is_8bit(x: np.ndarray) -> bool:
    """True when every value of ``x`` is an integer in 0..255."""
    return bool(x.size) and x.min() >= 0 and x.max() <= 255 and bool(np.all(x == np.round(x)))


def _scale_kind(name: str, x: np.ndarray) -> str:
    """``'8bit'``, ``'unit'`` or ``'both'`` (floats of only 0 and 1) for one image, else an error."""
    if not np.all(np.isfinite(x)):
        raise ValueError(f"suite2d: {name} has NaN or Inf values")
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(
                f"suite2d: {name} is integer with values in [{x.min()}, {x.max()}], "
                "outside the 8-bit range 0..255"
            )
        return "8bit"
    unit = x.min() >= -UNIT_TOLERANCE and x.max() <= 1 + UNIT_TOLERANCE
    if unit:
        return "both" if _is_8bit(x) else "unit"
    if _is_8bit(x):
        return "8bit"
    raise ValueError(
        f"suite2d: {name} has values in [{x.min():.6g}, {x.max():.6g}]: expected floats "
        "in [0, 1] or 8-bit values (integers 0..255)"
    )


def shared_8bit(
    fused: np.ndarray, mri: np.ndarray, pet: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put the fused image and its two sources on 0..255 with one shared rule (float64).

    8-bit inputs (integer dtype, or floats that are all integers in 0..255) are
    returned as they are. If all three are floats in [0, 1] (1e-6 round-off allowed),
    each becomes ``clip(round(255 x), 0, 255)``: one fixed scale for the three
    images and every slice, never a per-image min-max. A float image of only 0s and
    1s follows the other two (8-bit beside 8-bit images, [0, 1] otherwise); an
    integer dtype is always 8-bit.

    Raises
    ------
    ValueError
        Naming the image: NaN/Inf, integers outside 0..255, floats outside [0, 1]
        that are not 8-bit integers, or images on different scales.
    """
    arrays = {"fused": fused, "mri": mri, "pet": pet}
    scale = shared_scale({name: _scale_kind(name, np.asarray(x)) for name, x in arrays.items()})
    out = []
    for x in arrays.values():
        x = np.asarray(x, np.float64)
        out.append(np.clip(np.round(x * 255.0), 0.0, 255.0) if scale == "unit" else x)
    return out[0], out[1], out[2]


def shared_scale(kinds: dict[str, str]) -> str:
    """``'unit'`` or ``'8bit'``: the one scale of images of :func:`_scale_kind` ``kinds``.

    Raises
    ------
    ValueError
        When some images are in [0, 1] and others hold 8-bit values (naming them).
    """
    if all(k in ("unit", "both") for k in kinds.values()):
        return "unit"
    if all(k in ("8bit", "both") for k in kinds.values()):
        return "8bit"
    unit = [n for n, k in kinds.items() if k == "unit"]
    eight = [n for n, k in kinds.items() if k == "8bit"]
    raise ValueError(
        f"suite2d: images on different scales: {', '.join(unit)} in [0, 1] but "
        f"{', '.join(eight)} holding 8-bit values (0..255); give all three on one scale"
    )


def entropy(f: np.ndarray) -> np.ndarray:
    """Entropy in bits of the 256-bin histogram of each slice (values rounded to 0..255)."""
    s = len(f)
    grey = np.clip(np.round(f), 0, 255).astype(np.int64).reshape(s, -1)
    idx = grey + 256 * np.arange(s)[:, None]
    counts = np.bincount(idx.ravel(), minlength=256 * s).reshape(s, 256).astype(np.float64)
    p = counts / counts.sum(axis=1, keepdims=True)
    return -(p * np.log2(p + (p == 0))).sum(axis=1)


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
    ia = np.clip(np.round(a), 0, 255).astype(np.int64).reshape(s, -1)
    ib = np.clip(np.round(b), 0, 255).astype(np.int64).reshape(s, -1)
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
    """Pearson correlation of every slice pair; 0 where either has no variance."""
    dx = x - x.mean(axis=(1, 2), keepdims=True)
    dy = y - y.mean(axis=(1, 2), keepdims=True)
    den = np.sqrt((dx**2).sum(axis=(1, 2)) * (dy**2).sum(axis=(1, 2)))
    num = (dx * dy).sum(axis=(1, 2))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of the correlations of differences, ``corr(F - B, A) + corr(F - A, B)``."""
    return _corr(f - b, a) + _corr(f - a, b)


def _gauss_1d(n: int) -> np.ndarray:
    """Normalised 1D Gaussian of ``n`` samples, sigma ``n / 5`` (the VIF window's factor)."""
    sd = n / 5.0
    x = np.arange(n) - (n - 1) / 2.0
    w = np.exp(-(x**2) / (2 * sd**2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of every slice with the 1D window ``w`` on both axes."""
    r = len(w) // 2
    y = ndimage.correlate1d(x, w, axis=1, mode="constant")[:, r : x.shape[1] - r]
    return ndimage.correlate1d(y, w, axis=2, mode="constant")[:, :, r : x.shape[2] - r]


def _filter_valid_fast(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`_filter_valid` computing only the valid pixels (compiled loops, float64)."""
    rows = kernels.correlate_rows_valid(np.ascontiguousarray(x, dtype=np.float64), w)
    return kernels.correlate_cols_valid(rows, w)


def _vif_levels(
    x: np.ndarray, filt=_filter_valid
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per scale: (level image, window, local mean, local variance) of the VIF pyramid.

    ``filt`` is the 'valid' separable filter (:func:`_filter_valid` or its compiled form).
    """
    levels = []
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        w = _gauss_1d(n)
        if scale > 1:
            x = filt(x, w)[:, ::2, ::2]
        mu = filt(x, w)
        var = np.maximum(filt(x * x, w) - mu * mu, 0.0)
        levels.append((x, w, mu, var))
    return levels


def _vif_terms(s1, s2, s12) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice VIF numerator and denominator sums of one scale (the evaluator's guards)."""
    eps = VIF_EPS
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
    sv = np.where(sv <= eps, eps, sv)
    num = np.log10(1 + g * g * s1 / (sv + VIF_SIGMA_N_SQ)).sum(axis=(1, 2))
    den = np.log10(1 + s1 / VIF_SIGMA_N_SQ).sum(axis=(1, 2))
    return num, den


def vif_pixel_multi(refs: list[np.ndarray], dist: np.ndarray) -> list[np.ndarray]:
    """Pixel-domain multi-scale VIF of ``dist`` against each stack in ``refs``, per slice.

    The distorted image's pyramid and local statistics are computed once. A reference
    slice without local variance at any scale (``den = 0``) scores 1.
    """
    dist_levels = _vif_levels(np.asarray(dist, np.float64))
    out = []
    for ref in refs:
        num = np.zeros(len(dist))
        den = np.zeros(len(dist))
        for (r, w, mu1, s1), (d, _, mu2, s2) in zip(
            _vif_levels(np.asarray(ref, np.float64)), dist_levels, strict=True
        ):
            s12 = _filter_valid(r * d, w) - mu1 * mu2
            n, d_ = _vif_terms(s1, s2, s12)
            num += n
            den += d_
        out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0))
    return out


def vif_pixel(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Pixel-domain multi-scale VIF of ``dist`` against ``ref``, per slice."""
    return vif_pixel_multi([ref], dist)[0]


def _sobel_strength_angle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The evaluator's Sobel strength and orientation ``atan(S_y / S_x)`` (pi/2 where S_x = 0).

    ``S_x = conv2d(x, [[-1,0,1],[-2,0,2],[-1,0,1]], 'same')`` and
    ``S_y = conv2d(x, [[1,2,1],[0,0,0],[-1,-2,-1]], 'same')`` (true convolution, so the
    kernels are flipped: ``S_x[i, j] = x[., j-1] - x[., j+1]`` smoothed [1, 2, 1] along
    the column, ``S_y[i, j] = x[i+1, .] - x[i-1, .]`` smoothed along the row), zero padding.
    """
    sx = ndimage.correlate1d(x, [1.0, 0.0, -1.0], axis=2, mode="constant")
    sx = ndimage.correlate1d(sx, [1.0, 2.0, 1.0], axis=1, mode="constant")
    sy = ndimage.correlate1d(x, [-1.0, 0.0, 1.0], axis=1, mode="constant")
    sy = ndimage.correlate1d(sy, [1.0, 2.0, 1.0], axis=2, mode="constant")
    strength = np.sqrt(sx * sx + sy * sy)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.where(sx == 0, np.pi / 2, np.arctan(sy / np.where(sx == 0, 1.0, sx)))
    return strength, angle


def _edge_preservation(ga, aa, gf, af) -> np.ndarray:
    """Per-pixel ``Q^{AF} = Q_g Q_alpha`` with the evaluator's strength ratio (``g_F`` where equal)."""
    p = QABF_PARAMS
    with np.errstate(divide="ignore", invalid="ignore"):
        # gf / ga where ga > gf, ga / gf where ga < gf: the smaller over the larger.
        ratio = np.where(ga == gf, gf, np.minimum(ga, gf) / np.maximum(ga, gf))
    align = 1.0 - np.abs(aa - af) / (np.pi / 2)
    qg = p["tg"] / (1.0 + np.exp(p["kg"] * (ratio - p["dg"])))
    qa = p["ta"] / (1.0 + np.exp(p["ka"] * (align - p["da"])))
    return qg * qa


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Xydeas-Petrovic edge preservation ``Q^{AB/F}`` (joint form) per slice."""
    ga, aa = _sobel_strength_angle(a)
    gb, ab = _sobel_strength_angle(b)
    gf, af = _sobel_strength_angle(f)
    num = (_edge_preservation(ga, aa, gf, af) * ga + _edge_preservation(gb, ab, gf, af) * gb).sum(
        axis=(1, 2)
    )
    den = (ga + gb).sum(axis=(1, 2))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _uniform(x: np.ndarray) -> np.ndarray:
    """Mean over the 7x7 SSIM window of every slice (``reflect`` borders)."""
    return ndimage.uniform_filter(x, size=(1, SSIM_WIN, SSIM_WIN), mode="reflect")


def ssim_uniform(f: np.ndarray, refs: list[np.ndarray]) -> list[np.ndarray]:
    """SSIM of ``f`` against each stack in ``refs`` with scikit-image's defaults, per slice.

    As ``structural_similarity(f, r, data_range=255)``: 7x7 uniform window, sample
    covariance, K1 0.01, K2 0.03, mean of the map less a 3-px border.
    """
    if min(f.shape[1:]) < SSIM_WIN:
        raise ValueError(f"SSIM needs slices of at least {SSIM_WIN} px, got {f.shape[1:]}")
    cov_norm = SSIM_WIN**2 / (SSIM_WIN**2 - 1.0)
    c1 = (0.01 * SSIM_DATA_RANGE) ** 2
    c2 = (0.03 * SSIM_DATA_RANGE) ** 2
    pad = (SSIM_WIN - 1) // 2
    f = np.asarray(f, np.float64)
    ux = _uniform(f)
    vx = cov_norm * (_uniform(f * f) - ux * ux)
    out = []
    for r in refs:
        r = np.asarray(r, np.float64)
        uy = _uniform(r)
        vy = cov_norm * (_uniform(r * r) - uy * uy)
        vxy = cov_norm * (_uniform(f * r) - ux * uy)
        smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        out.append(smap[:, pad:-pad, pad:-pad].mean(axis=(1, 2)))
    return out


def psnr_suite(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``10 log10(max(F)^2 / mean(MSE(A, F), MSE(B, F)))`` per slice."""
    mse = (((a - f) ** 2).mean(axis=(1, 2)) + ((b - f) ** 2).mean(axis=(1, 2))) / 2.0
    return psnr_from_mse(f.max(axis=(1, 2)) ** 2, mse)


def suite_slices(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Every suite metric for 0..255 stacks ``F`` (fused), ``A``, ``B``; values ``(S,)``."""
    f, a, b = (np.asarray(x, np.float64) for x in (f, a, b))
    vif_a, vif_b = vif_pixel_multi([a, b], f)
    ssim_a, ssim_b = ssim_uniform(f, [a, b])
    return {
        "en": entropy(f),
        "sd": standard_deviation(f),
        "sf": spatial_frequency(f),
        "ag": average_gradient(f),
        "mi": mutual_information_8bit(f, a) + mutual_information_8bit(f, b),
        "scd": scd(f, a, b),
        "vif": vif_a + vif_b,
        "qabf": qabf(f, a, b),
        "ssim": ssim_a + ssim_b,
        "psnr": psnr_suite(f, a, b),
    }


# -- the same metrics with the sources' side computed once (fusion3d.metrics.prepared) ----


def _grey(x: np.ndarray) -> np.ndarray:
    """Integer grey levels 0..255 of a stack, ``(S, H * W)``."""
    return np.clip(np.round(x), 0, 255).astype(np.int64).reshape(len(x), -1)


def mutual_information_grey(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """:func:`mutual_information_8bit` from :func:`_grey` levels, one compiled pass a slice.

    Joint counts in one 256 x 256 array reset after each slice; the marginals come from
    the grey-level counts and only the non-empty joint bins enter the sum, as in the
    per-slice form (:func:`fusion3d.metrics.kernels.mutual_information_grey`).
    """
    return kernels.mutual_information_grey(
        np.ascontiguousarray(ia, dtype=np.int64), np.ascontiguousarray(ib, dtype=np.int64)
    )


def _ssim_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local 7x7 mean and (sample) variance of every slice inside the 3-px border.

    As :func:`ssim_uniform` computes them, cropped to the pixels its mean covers.
    """
    cov_norm = SSIM_WIN**2 / (SSIM_WIN**2 - 1.0)
    u = _uniform(x)
    v = cov_norm * (_crop(_uniform(x * x)) - _crop(u) * _crop(u))
    return np.ascontiguousarray(_crop(u)), v


def _crop(x: np.ndarray) -> np.ndarray:
    """The pixels of every slice the SSIM mean covers (a 3-px border less)."""
    pad = (SSIM_WIN - 1) // 2
    return x[:, pad:-pad, pad:-pad]


def prepare_sources(a: np.ndarray, b: np.ndarray) -> dict:
    """Every source-side part of the suite for two 0..255 float64 stacks ``(S, H, W)``.

    VIF pyramids with local means and variances, SSIM window statistics, Sobel strength
    and orientation (and the Qabf weight sum), grey levels, centred images for SCD.
    """
    if min(a.shape[1:]) < SSIM_WIN:
        raise ValueError(f"SSIM needs slices of at least {SSIM_WIN} px, got {a.shape[1:]}")
    sobel = [_sobel_strength_angle(a), _sobel_strength_angle(b)]
    centred = [x - x.mean(axis=(1, 2), keepdims=True) for x in (a, b)]
    return {
        "a": a,
        "b": b,
        "vif": [_vif_reference(_vif_levels(x, _filter_valid_fast)) for x in (a, b)],
        "ssim": [_ssim_stats(a), _ssim_stats(b)],
        "sobel": sobel,
        "qabf_den": (sobel[0][0] + sobel[1][0]).sum(axis=(1, 2)),
        "grey": [_grey(a), _grey(b)],
        "centred": [(c, (c**2).sum(axis=(1, 2))) for c in centred],
    }


def _vif_reference(levels) -> list[dict[str, np.ndarray]]:
    """A reference's side of :func:`_vif_terms` per scale: its guards and denominator sums."""
    out = []
    for r, w, mu1, s1 in levels:
        low1 = s1 < VIF_EPS
        s1z = np.where(low1, 0.0, s1)
        den = np.log10(1 + s1z / VIF_SIGMA_N_SQ).sum(axis=(1, 2))
        out.append({"r": r, "w": w, "mu": mu1, "s1eps": s1 + VIF_EPS, "low1": low1})
        out[-1].update(s1z=s1z, den=den)
    return out


def _vif_num(ref: dict, s2: np.ndarray, low2: np.ndarray, s12: np.ndarray) -> np.ndarray:
    """:func:`_vif_terms`' numerator sums from a :func:`_vif_reference` scale (same steps)."""
    g = s12 / ref["s1eps"]
    sv = g * s12
    np.subtract(s2, sv, out=sv)
    low1 = ref["low1"]
    g[low1] = 0.0
    sv[low1] = s2[low1]
    g[low2] = 0.0
    sv[low2] = 0.0
    neg = g < 0
    sv[neg] = s2[neg]
    g[neg] = 0.0
    np.maximum(sv, VIF_EPS, out=sv)  # where(sv <= eps, eps, sv)
    sv += VIF_SIGMA_N_SQ
    t = g * g
    t *= ref["s1z"]
    t /= sv
    t += 1
    return np.log10(t, out=t).sum(axis=(1, 2))


def _vif_prepared(f: np.ndarray, parts: dict) -> np.ndarray:
    """``VIF(A, F) + VIF(B, F)`` per slice from the prepared source pyramids."""
    levels = _vif_levels(f, _filter_valid_fast)
    dist_levels = [(d, mu2, s2, s2 < VIF_EPS) for d, _, mu2, s2 in levels]
    total = np.zeros(len(f))
    for ref_levels in parts["vif"]:
        num = np.zeros(len(f))
        den = np.zeros(len(f))
        for ref, (d, mu2, s2, low2) in zip(ref_levels, dist_levels, strict=True):
            s12 = _filter_valid_fast(ref["r"] * d, ref["w"]) - ref["mu"] * mu2
            num += _vif_num(ref, s2, low2, s12)
            den += ref["den"]
        total = total + np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return total


def _ssim_prepared(f: np.ndarray, parts: dict) -> np.ndarray:
    """``SSIM(F, A) + SSIM(F, B)`` per slice from the prepared window statistics."""
    c1 = (0.01 * SSIM_DATA_RANGE) ** 2
    c2 = (0.03 * SSIM_DATA_RANGE) ** 2
    cov_norm = SSIM_WIN**2 / (SSIM_WIN**2 - 1.0)
    ux, vx = _ssim_stats(f)
    total = np.zeros(len(f))
    for r, (uy, vy) in zip((parts["a"], parts["b"]), parts["ssim"], strict=True):
        uxy = _crop(_uniform(f * r))
        total = total + kernels.ssim_uniform_means(ux, vx, uy, vy, uxy, cov_norm, c1, c2)
    return total


def _qabf_prepared(f: np.ndarray, parts: dict) -> np.ndarray:
    """:func:`qabf` per slice from the prepared Sobel strength and orientation of A and B."""
    gf, af = _sobel_strength_angle(f)
    (ga, aa), (gb, ab) = parts["sobel"]
    num = (_edge_preservation(ga, aa, gf, af) * ga + _edge_preservation(gb, ab, gf, af) * gb).sum(
        axis=(1, 2)
    )
    den = parts["qabf_den"]
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _scd_prepared(f: np.ndarray, parts: dict) -> np.ndarray:
    """:func:`scd` per slice from the prepared centred sources."""
    out = np.zeros(len(f))
    for other, (dy, dy2) in ((parts["b"], parts["centred"][0]), (parts["a"], parts["centred"][1])):
        x = f - other
        dx = x - x.mean(axis=(1, 2), keepdims=True)
        den = np.sqrt((dx**2).sum(axis=(1, 2)) * dy2)
        num = (dx * dy).sum(axis=(1, 2))
        out = out + np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return out


def suite_prepared(f: np.ndarray, parts: dict) -> dict[str, np.ndarray]:
    """:func:`suite_slices` of a fused 0..255 float64 stack against :func:`prepare_sources`."""
    a, b = parts["a"], parts["b"]
    grey_f = _grey(f)
    return {
        "en": entropy(f),
        "sd": standard_deviation(f),
        "sf": spatial_frequency(f),
        "ag": average_gradient(f),
        "mi": mutual_information_grey(grey_f, parts["grey"][0])
        + mutual_information_grey(grey_f, parts["grey"][1]),
        "scd": _scd_prepared(f, parts),
        "vif": _vif_prepared(f, parts),
        "qabf": _qabf_prepared(f, parts),
        "ssim": _ssim_prepared(f, parts),
        "psnr": psnr_suite(f, a, b),
    }
