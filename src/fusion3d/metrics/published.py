"""The metrics of the published DC2Fusion evaluation code, computed as that code computes them.

The paper's numbers come from ``evaluation_metrics.py`` of louelin/DC2Fusion, called by
its ``infer_singleImage.py`` on one axial slice of float32 tensors in [0, 1] as
``metric(fused, source)``. This module reproduces each of those functions on float32
2D slices, without torch or torchmetrics (the metric definitions are written out here),
but with the two libraries whose numerics are the definition:

- :func:`fsim`: phase congruency from phasepack's ``phasecong`` (Kovesi's phasecong3,
  phasepack 1.5) with the code's arguments ``nscale=4, minWaveLength=6, mult=2,
  sigmaOnf=0.5978`` and phasepack's other defaults (6 orientations, k = 2, ...); the
  code's "PC" is the SUM of the six per-orientation maps ``phasecong(...)[4][o]``
  (values up to about 2.4, not a [0, 1] phase congruency). Gradients are
  ``cv2.Scharr(img, cv2.CV_16U, dx, dy)`` on the [0, 1] float slice (OpenCV): the
  unnormalised Scharr kernel (3, 10, 3), reflect-101 borders and a saturating, rounding
  cast to uint16 (negative derivatives become 0); the magnitude ``sqrt(gx**2 + gy**2)``
  is taken in uint16 then float32, as numpy does it there. ``S_L = S_PC * S_G`` with
  T1 = 0.85, T2 = 160, ``FSIM = sum(S_L * PC_m) / sum(PC_m)``.
- :func:`mutual_information`: ``np.histogramdd`` of the two images with numpy's default
  10 bins, ``density=True``; ``H0 + H1 - H01`` with ``scipy.stats.entropy`` (nats).
- :func:`ssim`: torchmetrics' ``StructuralSimilarityIndexMeasure(data_range=1.0)`` as
  it was up to torchmetrics 1.4.1 (the paper's time): 11-tap Gaussian window, sigma
  1.5, ``C1 = 0.01^2``, ``C2 = 0.03^2``, variances clamped at 0, and the map averaged
  after cropping the 5-px border the window does not cover. torchmetrics >= 1.4.2
  averages the whole (reflect-padded) map instead, up to 22 % higher on brain slices.
- :func:`nmi`: scikit-image's ``normalized_mutual_information`` (100 bins), the same
  histogram and entropies with ``(H0 + H1) / H01``.
- :func:`psnr`: torchmetrics' ``PeakSignalNoiseRatio(data_range=1.0)``.

Each function takes ``(fused, source)`` in the published argument order, casts both to
float32 (what the published code receives), and matches the published function to
1e-6 on brain slices (measured against the unmodified code, see the README).

Where the published code divides by zero we return a value instead of NaN or inf:
PSNR of identical images is :data:`fusion3d.metrics.core.PSNR_MAX_DB`, and an FSIM whose
``sum(PC_m)`` is 0 (both slices without phase congruency) is the unweighted mean of
``S_L``; NMI of two constant slices is 2.0; phase congruency where phasepack divides 0
by 0 (no filter response in an orientation, e.g. an image constant along it) is 0.
"""

from __future__ import annotations

import sys
import warnings

import cv2
import numpy as np
from scipy import ndimage
from scipy.stats import entropy

from fusion3d.metrics import core


def _import_phasecong():
    """phasepack's ``phasecong`` on scipy.fftpack's FFTs, as the published code ran it.

    phasepack takes pyfftw's FFTs when pyfftw can be imported (we install it for
    :func:`fusion3d.metrics.fsim.phase_congruency_fast`), which would change the last bits
    of the published FSIM. pyfftw is hidden while phasepack is imported, so it falls back
    on ``scipy.fftpack`` (and warns, which is silenced).
    """
    hidden = {k: v for k, v in sys.modules.items() if k == "pyfftw" or k.startswith("pyfftw.")}
    try:
        sys.modules.update(dict.fromkeys([*hidden, "pyfftw"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            from phasepack import phasecong, tools
    finally:
        for key in [k for k in sys.modules if k == "pyfftw" or k.startswith("pyfftw.")]:
            del sys.modules[key]
        sys.modules.update(hidden)
    if tools.fft2.__module__ != "scipy.fftpack._basic":
        raise ImportError(f"phasepack uses {tools.fft2.__module__}'s FFT, not scipy.fftpack's")
    return phasecong


phasecong = _import_phasecong()

#: Arguments the published ``fsim`` passes to phasepack's ``phasecong``.
PHASECONG_ARGS: dict[str, float] = {"nscale": 4, "minWaveLength": 6, "mult": 2, "sigmaOnf": 0.5978}
#: phasepack's default number of orientations; the published code sums all of them.
N_ORIENT = 6
FSIM_T1 = 0.85
FSIM_T2 = 160
#: ``np.histogramdd``'s default bin count, used by the published ``mutual_information``.
MI_BINS = 10
#: scikit-image's default bin count, used by the published ``nmi``.
NMI_BINS = 100
#: torchmetrics' SSIM window: ``int(3.5 * sigma + 0.5) * 2 + 1`` = 11 taps, border 5.
SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)


def as_slice32(name: str, image: object) -> np.ndarray:
    """Return ``image`` as a C-contiguous float32 2D array (what the published code gets).

    Raises
    ------
    ValueError
        When ``image`` is not 2D or holds NaN/Inf values (the message names ``name``).
    """
    arr = np.ascontiguousarray(np.asarray(image), dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2D slice, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} NaN/Inf values")
    return arr


def phase_congruency_sum(image: np.ndarray) -> np.ndarray:
    """Sum over phasepack's 6 orientations of ``phasecong(image, ...)[4]`` (float64 map).

    ``image`` is the float32 slice; phasepack then works in float32/complex64 as it does
    for the published code.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        pc_maps = phasecong(image, **PHASECONG_ARGS)[4]
    total = np.zeros(image.shape, dtype=np.float64)
    for orientation in range(N_ORIENT):
        # phasepack divides by the orientation's summed amplitude: 0/0 = NaN where its
        # filters have no response at all (an image constant along it); that is 0 PC.
        total += np.nan_to_num(pc_maps[orientation], nan=0.0)
    return total


def scharr_magnitude(image: np.ndarray) -> np.ndarray:
    """``sqrt(gx**2 + gy**2)`` of ``cv2.Scharr(image, cv2.CV_16U, ...)`` (float32 map).

    The derivatives are saturated to uint16 by OpenCV (negative -> 0, rounded) and
    squared in uint16 (exact for [0, 1] images: at most 16**2 + 16**2), as published.
    """
    gx = cv2.Scharr(image, cv2.CV_16U, 1, 0)
    gy = cv2.Scharr(image, cv2.CV_16U, 0, 1)
    return np.sqrt(gx**2 + gy**2)


def fsim_parts(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(PC sum, Scharr magnitude)`` of one float32 slice, reusable across comparisons."""
    image = as_slice32("image", image)
    return phase_congruency_sum(image), scharr_magnitude(image)


def _similarity(x: np.ndarray, y: np.ndarray, constant: float) -> np.ndarray:
    """``(2 x y + c) / (x^2 + y^2 + c)`` in the dtype of ``x`` and ``y``."""
    return (2 * x * y + constant) / (x**2 + y**2 + constant)


def fsim_from_parts(
    parts_fused: tuple[np.ndarray, np.ndarray], parts_source: tuple[np.ndarray, np.ndarray]
) -> float:
    """Published FSIM of two slices from their :func:`fsim_parts`."""
    pc_source, gm_source = parts_source
    pc_fused, gm_fused = parts_fused
    s_l = _similarity(pc_source, pc_fused, FSIM_T1) * _similarity(gm_source, gm_fused, FSIM_T2)
    pc_m = np.maximum(pc_source, pc_fused)
    denominator = np.sum(pc_m)
    if denominator == 0:
        return float(np.mean(s_l))
    return float(np.sum(s_l * pc_m) / denominator)


def fsim(fused: np.ndarray, source: np.ndarray) -> float:
    """FSIM of the published ``evaluation_metrics.fsim(fused, source)`` (see module doc)."""
    return fsim_from_parts(
        fsim_parts(as_slice32("fused", fused)), fsim_parts(as_slice32("source", source))
    )


def _entropies(fused: np.ndarray, source: np.ndarray, bins: int) -> tuple[float, float, float]:
    """``(H0, H1, H01)`` as scikit-image and the published code compute them.

    ``np.histogramdd`` of the two float32 samples with ``density=True`` (its float32 bin
    edges make the densities differ from plain counts in the last bits), then
    ``scipy.stats.entropy`` (nats) of the two marginals and of the joint histogram.
    """
    a = as_slice32("fused", fused)
    b = as_slice32("source", source)
    hist, _ = np.histogramdd([np.reshape(a, -1), np.reshape(b, -1)], bins=bins, density=True)
    h0 = entropy(np.sum(hist, axis=0))
    h1 = entropy(np.sum(hist, axis=1))
    h01 = entropy(np.reshape(hist, -1))
    return float(h0), float(h1), float(h01)


def mutual_information(fused: np.ndarray, source: np.ndarray) -> float:
    """MI (nats) of the published ``mutual_information``: ``H0 + H1 - H01``, 10 bins."""
    h0, h1, h01 = _entropies(fused, source, MI_BINS)
    return h0 + h1 - h01


def nmi(fused: np.ndarray, source: np.ndarray) -> float:
    """NMI of the published ``nmi`` (scikit-image's, 100 bins): ``(H0 + H1) / H01``.

    Two constant slices (``H01 = 0``) give 2.0 (each determines the other) instead of NaN.
    """
    h0, h1, h01 = _entropies(fused, source, NMI_BINS)
    if h01 <= 0.0:
        return 2.0
    return (h0 + h1) / h01


def psnr(fused: np.ndarray, source: np.ndarray) -> float:
    """PSNR (data range 1) of the published ``psnr`` on the float32 slices (capped at 100 dB)."""
    return core.psnr(as_slice32("fused", fused), as_slice32("source", source), 1.0)


def gaussian_window() -> np.ndarray:
    """torchmetrics' 1D SSIM window: ``exp(-(x / 1.5)^2 / 2)``, x = -5..5, sum 1 (float64)."""
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    g = np.exp(-((x / SSIM_SIGMA) ** 2) / 2)
    return g / g.sum()


def _valid_filter(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable filtering of a 2D image, keeping only fully covered pixels."""
    r = SSIM_RADIUS
    out = ndimage.correlate1d(image, window, axis=0, mode="constant")[r:-r]
    return ndimage.correlate1d(out, window, axis=1, mode="constant")[:, r:-r]


def ssim_map(fused: np.ndarray, source: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """torchmetrics (<= 1.4.1) SSIM map on the pixels the 11x11 window fully covers.

    Shape ``(H - 10, W - 10)``; computed in float64 from the float32 slices (closer to
    torch's float32 convolution than a float32 computation with another summation
    order). Variances are clamped at 0 as torchmetrics does.
    """
    a = as_slice32("fused", fused).astype(np.float64)
    b = as_slice32("source", source).astype(np.float64)
    if min(a.shape) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs slices of at least {2 * SSIM_RADIUS + 1} px, got {a.shape}")
    g = gaussian_window()
    mu_a, mu_b = _valid_filter(a, g), _valid_filter(b, g)
    var_a = np.maximum(_valid_filter(a * a, g) - mu_a**2, 0.0)
    var_b = np.maximum(_valid_filter(b * b, g) - mu_b**2, 0.0)
    cov = _valid_filter(a * b, g) - mu_a * mu_b
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )


def ssim(fused: np.ndarray, source: np.ndarray) -> float:
    """SSIM of the published ``ssim`` (torchmetrics <= 1.4.1, data range 1, border cropped)."""
    return float(np.mean(ssim_map(fused, source)))
