"""Elementary fusion metrics (PSNR, Gaussian SSIM, entropies, MI, NMI) and input checks.

Every function works on whole slice stacks where that matters: a stack is an array of
shape ``(S, H, W)`` (slice first) and filters act on the in-plane axes ``(1, 2)`` only,
so a whole volume is scored without a Python loop over slices or pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusion3d.metrics import kernels

#: PSNR of identical images is infinite; we report it capped at this value (dB) so that
#: tables stay numeric and JSON output stays valid. Any PSNR is clipped to [-cap, cap].
PSNR_MAX_DB = 100.0

#: Gaussian SSIM window of Wang et al. 2004 (and of scikit-image with gaussian_weights=True).
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # -> 11-sample window (radius 5), as scikit-image uses
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def as_image(name: str, array: object, ndims: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Return ``array`` as a finite float64 array with an allowed number of dimensions.

    Parameters
    ----------
    name
        Name of the input, used in error messages.
    array
        Array-like image.
    ndims
        Allowed numbers of dimensions.

    Raises
    ------
    ValueError
        On a wrong number of dimensions, an empty array or NaN/Inf values.
    """
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim not in ndims:
        raise ValueError(
            f"{name}: expected a {' or '.join(map(str, ndims))}D array, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name}: empty array (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} NaN/Inf values")
    return arr


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    Same definition as ``skimage.metrics.peak_signal_noise_ratio``; identical images
    give :data:`PSNR_MAX_DB` instead of ``inf``.
    """
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return psnr_from_mse(data_range**2, mse)


def psnr_from_mse(peak_sq: float | np.ndarray, mse: float | np.ndarray) -> np.ndarray | float:
    """``10 log10(peak_sq / mse)`` clipped to ``[-PSNR_MAX_DB, PSNR_MAX_DB]`` (0/0 -> cap)."""
    peak_sq = np.asarray(peak_sq, np.float64)
    mse = np.asarray(mse, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 10.0 * np.log10(peak_sq / mse)
    value = np.where(mse == 0, PSNR_MAX_DB, value)
    value = np.clip(np.nan_to_num(value, nan=PSNR_MAX_DB), -PSNR_MAX_DB, PSNR_MAX_DB)
    return float(value) if value.ndim == 0 else value


def gaussian_moments(
    x: np.ndarray, axes: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Local Gaussian mean and mean of squares of ``x`` (the SSIM window), over ``axes``.

    Computed in the dtype of ``x`` (float32 input stays float32), ``mode='reflect'``.
    """
    axes = tuple(range(x.ndim)) if axes is None else axes
    sigma = [SSIM_SIGMA if ax in axes else 0.0 for ax in range(x.ndim)]
    mu = ndimage.gaussian_filter(x, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")
    mu2 = ndimage.gaussian_filter(x * x, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")
    return mu, mu2


def _ssim_window32() -> np.ndarray:
    """The 11 float32 weights of the SSIM Gaussian (sigma 1.5, truncate 3.5), as scipy's."""
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / SSIM_SIGMA**2 * t**2)
    return (w / w.sum()).astype(np.float32)


_SSIM_WINDOW32 = _ssim_window32()


def gaussian_filter_3d_fast(x: np.ndarray) -> np.ndarray:
    """The SSIM window's ``ndimage.gaussian_filter`` of a float32 volume, summed in float32.

    The same 11 weights and three 1D passes with reflect borders as
    ``gaussian_filter(x, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode='reflect')``, in compiled
    vectorised loops (:mod:`fusion3d.metrics.kernels`). scipy sums each pass in float64 and
    stores float32; here the sums are float32 too, so values move by float32 round-off
    (about 4e-7 relative at most per voxel).
    """
    w = _SSIM_WINDOW32
    radius = len(w) // 2
    out = np.asarray(x, np.float32)
    for axis in range(3):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")  # scipy's 'reflect': d c b a | a b c d
        if axis == 0:
            flat = padded.reshape(1, padded.shape[0], -1)
            out = kernels.correlate_rows_valid(flat, w).reshape(x.shape)
        elif axis == 1:
            out = kernels.correlate_rows_valid(padded, w)
        else:
            out = kernels.correlate_cols_valid(padded, w)
    return out


def gaussian_moments_fast(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`gaussian_moments` of a float32 volume over all axes, :func:`gaussian_filter_3d_fast`."""
    return gaussian_filter_3d_fast(x), gaussian_filter_3d_fast(x * x)


def ssim_map(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float,
    axes: tuple[int, ...] | None = None,
    moments_a: tuple[np.ndarray, np.ndarray] | None = None,
    moments_b: tuple[np.ndarray, np.ndarray] | None = None,
    fast: bool = False,
) -> np.ndarray:
    """Gaussian SSIM map (window sigma 1.5, 11 samples, population covariance).

    Parameters
    ----------
    a, b
        Images of the same shape and float dtype (float32 is kept for speed).
    data_range
        Dynamic range ``L`` in ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``.
    axes
        Axes the Gaussian window extends over (default: all); other axes are not
        filtered, so ``axes=(1, 2)`` scores every slice of an ``(S, H, W)`` stack alone.
        Borders are handled with ``mode='reflect'`` as in scikit-image.
    moments_a, moments_b
        :func:`gaussian_moments` of ``a`` (``b``) when already known (reused across images).
    fast
        Filter ``a * b`` with :func:`gaussian_filter_3d_fast` (float32 volumes, all axes).
    """
    axes = tuple(range(a.ndim)) if axes is None else axes
    sigma = [SSIM_SIGMA if ax in axes else 0.0 for ax in range(a.ndim)]
    ux, uxx = gaussian_moments(a, axes) if moments_a is None else moments_a
    uy, uyy = gaussian_moments(b, axes) if moments_b is None else moments_b
    if fast:
        uxy = gaussian_filter_3d_fast(a * b)
    else:
        uxy = ndimage.gaussian_filter(a * b, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def ssim_slices(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float = 1.0,
    moments_a: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Mean Gaussian SSIM of every slice of two ``(S, H, W)`` stacks, shape ``(S,)``.

    Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range)`` on each slice: the map is
    averaged after cropping the 5-pixel border the window does not fully cover.
    """
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(a.shape[1:]) < 2 * pad + 1:
        raise ValueError(f"SSIM needs slices of at least {2 * pad + 1} px, got {a.shape[1:]}")
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    smap = ssim_map(a, b, data_range, axes=(1, 2), moments_a=moments_a)
    return smap[:, pad:-pad, pad:-pad].mean(axis=(1, 2))


def masked_ssim_3d(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray, data_range: float = 1.0
) -> float:
    """Mean of the 3D Gaussian SSIM map over ``mask`` (float32 maps, reflect borders).

    The filters run on the mask's bounding box grown by the window radius (clipped to
    the volume): values at mask voxels only depend on voxels within that radius, so they
    equal those of filtering the whole volume.
    """
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    nz = np.nonzero(mask)
    box = tuple(
        slice(max(int(ix.min()) - radius, 0), min(int(ix.max()) + radius + 1, n))
        for ix, n in zip(nz, mask.shape, strict=True)
    )
    smap = ssim_map(a[box].astype(np.float32), b[box].astype(np.float32), data_range)
    return float(smap[mask[box]].mean(dtype=np.float64))


def entropy_of_counts(counts: np.ndarray, axis: tuple[int, ...] | int | None = None) -> np.ndarray:
    """Shannon entropy (nats) of histogram ``counts`` normalised over ``axis``."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(total > 0, counts / total, 0.0)
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis)


def joint_histogram(a: np.ndarray, b: np.ndarray, bins: int) -> np.ndarray:
    """``bins x bins`` joint histogram of two samples over their own min..max ranges.

    Uses numpy's rules (a constant sample gets the range ``value +- 0.5``), as
    ``skimage.metrics.normalized_mutual_information`` does through ``np.histogramdd``.
    """
    hist, _, _ = np.histogram2d(np.ravel(a), np.ravel(b), bins=bins)
    return hist


def entropies(hist: np.ndarray) -> tuple[float, float, float]:
    """``(H(A), H(B), H(A, B))`` in nats from a joint histogram (A on rows)."""
    return (
        float(entropy_of_counts(hist.sum(axis=1))),
        float(entropy_of_counts(hist.sum(axis=0))),
        float(entropy_of_counts(hist)),
    )


def nmi(a: np.ndarray, b: np.ndarray, bins: int = 100) -> float:
    """Normalised mutual information ``(H(A) + H(B)) / H(A, B)``, range ``[1, 2]``.

    Same as ``skimage.metrics.normalized_mutual_information(a, b, bins=bins)``. When
    ``H(A, B) = 0`` (both images constant, each determines the other) we return 2.0.
    """
    ha, hb, hab = entropies(joint_histogram(a, b, bins))
    if hab <= 0.0:
        return 2.0
    return (ha + hb) / hab


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 100) -> float:
    """Mutual information ``H(A) + H(B) - H(A, B)`` in nats from a ``bins``-bin histogram."""
    ha, hb, hab = entropies(joint_histogram(a, b, bins))
    return max(ha + hb - hab, 0.0)
