"""FSIM (Zhang, Zhang, Mou & Zhang, IEEE TIP 2011), grayscale variant, on slice stacks.

This is the textbook FSIM, reported as ``fsim_zhang``. The published DC2Fusion code's
``fsim`` (phasepack's phasecong3 summed over 6 orientations, OpenCV ``CV_16U`` Scharr
gradients) is another number, in :mod:`fusion3d.metrics.published`.

Phase congruency follows Zhang's ``phasecong2`` (Kovesi's PC_2 measure with log-Gabor
filters): 4 scales, 4 orientations, minimum wavelength 6, scale factor 2, angular
spread ratio 1.2, noise threshold k = 2 with the empirical 1/1.7 rescaling, low-pass
cut-off 0.45 (order 15), except ``sigmaOnf = 0.5978`` as in the DC2Fusion evaluation
code. Gradient magnitude uses the Scharr kernels ``[3 10 3]/16`` (zero padding, like
MATLAB ``conv2(..., 'same')``). ``S_L = S_PC * S_G`` with T1 = 0.85, T2 = 160 and
``FSIM = sum(S_L * PC_m) / sum(PC_m)``, ``PC_m = max(PC_1, PC_2)``.

T2 = 160 is calibrated for 8-bit grey levels, so images are multiplied by
``255 / data_range`` before the gradient term (PC itself is contrast invariant).
Images whose shorter side is at least 384 px are first box-filtered and subsampled by
``F = round(min(H, W) / 256)`` as in Zhang's code; our 128 px slices are not.

Conventions where the published definition divides by zero: PC is 0 where the summed
amplitude is 0 (flat image), and a slice with ``sum(PC_m) = 0`` (both images flat)
scores the unweighted mean of ``S_L`` (1 for two flat images).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyfftw
from scipy import fft as sfft
from scipy import ndimage

from fusion3d.metrics import kernels

N_SCALE = 4
N_ORIENT = 4
MIN_WAVELENGTH = 6.0
MULT = 2.0
SIGMA_ON_F = 0.5978
D_THETA_ON_SIGMA = 1.2
K_NOISE = 2.0
EPSILON = 1e-4
T1 = 0.85
T2 = 160.0


def _freq_range(n: int) -> np.ndarray:
    """Normalised frequency coordinates of Kovesi's code (odd and even sizes differ)."""
    if n % 2:
        return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
    return np.arange(-n / 2, n / 2) / n


@lru_cache(maxsize=8)
def _filters(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-Gabor filters for one image size.

    Returns
    -------
    filters
        ``(N_ORIENT, N_SCALE, rows, cols)`` frequency-domain filters (zero frequency at
        the corner).
    em_n
        ``(N_ORIENT,)`` sum of squared smallest-scale filter values (noise model).
    noise_sums
        ``(N_ORIENT, 2)``: ``sum(sum_s f_s^2)`` and ``sum(sum_{i<j} f_i f_j)`` of the
        spatial filters, for the expected noise energy.
    """
    x, y = np.meshgrid(_freq_range(cols), _freq_range(rows))
    radius = np.sqrt(x**2 + y**2)
    theta = np.arctan2(-y, x)
    lowpass = np.fft.ifftshift(1.0 / (1.0 + (radius / 0.45) ** (2 * 15)))
    radius = np.fft.ifftshift(radius)
    theta = np.fft.ifftshift(theta)
    radius[0, 0] = 1.0
    sin_t, cos_t = np.sin(theta), np.cos(theta)

    log_gabor = []
    for s in range(N_SCALE):
        fo = 1.0 / (MIN_WAVELENGTH * MULT**s)
        lg = np.exp(-(np.log(radius / fo) ** 2) / (2 * np.log(SIGMA_ON_F) ** 2)) * lowpass
        lg[0, 0] = 0.0
        log_gabor.append(lg)

    theta_sigma = np.pi / N_ORIENT / D_THETA_ON_SIGMA
    filters = np.empty((N_ORIENT, N_SCALE, rows, cols))
    em_n = np.empty(N_ORIENT)
    noise_sums = np.empty((N_ORIENT, 2))
    for o in range(N_ORIENT):
        angle = o * np.pi / N_ORIENT
        ds = sin_t * np.cos(angle) - cos_t * np.sin(angle)
        dc = cos_t * np.cos(angle) + sin_t * np.sin(angle)
        spread = np.exp(-(np.abs(np.arctan2(ds, dc)) ** 2) / (2 * theta_sigma**2))
        spatial = []
        for s in range(N_SCALE):
            filters[o, s] = log_gabor[s] * spread
            spatial.append(np.real(np.fft.ifft2(filters[o, s])) * np.sqrt(rows * cols))
        em_n[o] = np.sum(filters[o, 0] ** 2)
        sum_an2 = sum(np.sum(f**2) for f in spatial)
        sum_aiaj = sum(
            np.sum(spatial[i] * spatial[j])
            for i in range(N_SCALE - 1)
            for j in range(i + 1, N_SCALE)
        )
        noise_sums[o] = (sum_an2, sum_aiaj)
    filters.setflags(write=False)
    return filters, em_n, noise_sums


def phase_congruency(stack: np.ndarray) -> np.ndarray:
    """Phase congruency (Zhang's ``phasecong2``) of every slice of an ``(S, H, W)`` stack.

    Computed in single precision (complex64 FFTs) for speed; returns a float64
    ``(S, H, W)`` array in ``[0, 1]`` (0 where the image is flat).
    """
    stack = np.asarray(stack, np.float32)
    n_slices, rows, cols = stack.shape
    filters, em_n, noise_sums = _filters(rows, cols)
    filters32 = filters.astype(np.float32)
    image_fft = sfft.fft2(stack, axes=(1, 2))
    energy_all = np.zeros(stack.shape, np.float32)
    an_all = np.zeros(stack.shape, np.float32)
    for o in range(N_ORIENT):
        eo = [sfft.ifft2(image_fft * filters32[o, s], axes=(1, 2)) for s in range(N_SCALE)]
        total = eo[0].copy()
        for e in eo[1:]:
            total += e
        sum_e, sum_o = total.real, total.imag
        x_energy = np.abs(total)
        x_energy += EPSILON
        mean_e = sum_e / x_energy
        mean_o = sum_o / x_energy
        # sum_s (E_s mean_e + O_s mean_o) collapses to the same product of the sums.
        energy = sum_e * mean_e + sum_o * mean_o
        for e in eo:
            an_all += np.abs(e)
            energy -= np.abs(e.real * mean_o - e.imag * mean_e)
        # Noise: median of the smallest-scale squared amplitude, per slice (Rayleigh model).
        amp2 = eo[0].real ** 2 + eo[0].imag ** 2
        threshold = _noise_threshold(amp2.reshape(n_slices, -1), em_n[o], noise_sums[o])
        energy -= threshold.astype(np.float32)[:, None, None]
        np.maximum(energy, 0.0, out=energy)
        energy_all += energy
    return _energy_ratio(energy_all, an_all)


def _energy_ratio(energy: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """``energy / amplitude`` in float64, 0 where the summed amplitude is 0 (flat image)."""
    energy = energy.astype(np.float64)
    amplitude = amplitude.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(amplitude > 0, energy / np.where(amplitude > 0, amplitude, 1.0), 0.0)


def _noise_threshold(amp2: np.ndarray, em_n: float, noise_sums: np.ndarray) -> np.ndarray:
    """Per-slice noise threshold of one orientation from the smallest scale's ``|e|^2``."""
    median_e2n = np.median(amp2, axis=1).astype(np.float64)
    noise_power = (-median_e2n / np.log(0.5)) / em_n
    est_e2 = 2 * noise_power * noise_sums[0] + 4 * noise_power * noise_sums[1]
    tau = np.sqrt(est_e2 / 2)
    return (tau * np.sqrt(np.pi / 2) + K_NOISE * np.sqrt((2 - np.pi / 2) * tau**2)) / 1.7


@lru_cache(maxsize=2)
def _inverse_fft_plan(shape: tuple[int, ...]) -> pyfftw.FFTW:
    """FFTW plan of the unnormalised inverse 2D FFT over the last two axes of ``shape``.

    complex64, one thread, ``FFTW_ESTIMATE``: the plan depends on the shape only (not on
    timings, as ``FFTW_MEASURE``'s would), so every run sums in the same order. The plan
    owns aligned input and output arrays (``plan.input_array``, ``plan.output_array``).
    """
    src = pyfftw.empty_aligned(shape, dtype="complex64")
    dst = pyfftw.empty_aligned(shape, dtype="complex64")
    return pyfftw.FFTW(
        src, dst, axes=(-2, -1), direction="FFTW_BACKWARD", flags=("FFTW_ESTIMATE",), threads=1
    )


def phase_congruency_fast(stack: np.ndarray) -> np.ndarray:
    """:func:`phase_congruency` with an orientation's 4 scales in one FFT and one pass.

    The same float32 steps as :func:`phase_congruency`; the inverse FFTs run in FFTW
    (:func:`_inverse_fft_plan`, the ``1 / (H W)`` normalisation folded into the filters)
    and the per-pixel work in :func:`fusion3d.metrics.kernels.pc_orientation` (one pass
    over the 4 responses instead of about 40 numpy passes). Differs from
    :func:`phase_congruency` by float32 round-off only.
    """
    stack = np.asarray(stack, np.float32)
    n_slices, rows, cols = stack.shape
    filters, em_n, noise_sums = _filters(rows, cols)
    filters32 = (filters / (rows * cols)).astype(np.float32)
    image_fft = sfft.fft2(stack, axes=(1, 2))
    plan = _inverse_fft_plan((N_SCALE, n_slices, rows, cols))
    n = stack.size
    energy_all = np.zeros(n, np.float32)
    work = np.zeros((3, n), np.float32)  # amplitude sum, energy, smallest-scale |e|^2
    for o in range(N_ORIENT):
        np.multiply(image_fft[None], filters32[o][:, None], out=plan.input_array)
        plan.execute()
        responses = plan.output_array.reshape(N_SCALE, n)
        kernels.pc_orientation(responses, work, np.float32(EPSILON))
        threshold = _noise_threshold(work[2].reshape(n_slices, -1), em_n[o], noise_sums[o])
        kernels.add_above_threshold(energy_all, work[1], threshold.astype(np.float32), rows * cols)
    return _energy_ratio(energy_all.reshape(stack.shape), work[0].reshape(stack.shape))


def gradient_magnitude(stack: np.ndarray) -> np.ndarray:
    """Scharr gradient magnitude (kernels ``[3 10 3]/16``, zero padding) per slice."""
    deriv = np.array([1.0, 0.0, -1.0])
    smooth = np.array([3.0, 10.0, 3.0]) / 16.0
    gx = ndimage.correlate1d(stack, deriv, axis=2, mode="constant")
    gx = ndimage.correlate1d(gx, smooth, axis=1, mode="constant")
    gy = ndimage.correlate1d(stack, deriv, axis=1, mode="constant")
    gy = ndimage.correlate1d(gy, smooth, axis=2, mode="constant")
    return np.sqrt(gx**2 + gy**2)


def _downsample(stack: np.ndarray) -> np.ndarray:
    """Zhang's pre-scaling: box filter and subsample by ``round(min(H, W) / 256)``."""
    factor = max(1, round(min(stack.shape[1:]) / 256))
    if factor == 1:
        return stack
    smoothed = ndimage.uniform_filter(stack, size=(1, factor, factor), mode="constant")
    return smoothed[:, ::factor, ::factor]


def fsim_parts(stack: np.ndarray, data_range: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Phase congruency and gradient magnitude of a stack, reusable across comparisons."""
    return _parts(stack, data_range, phase_congruency)


def _parts(stack: np.ndarray, data_range: float, pc) -> tuple[np.ndarray, np.ndarray]:
    """Phase congruency (by ``pc``) and gradient magnitude of the stack on 0..255."""
    scaled = _downsample(np.asarray(stack, np.float64) * (255.0 / data_range))
    return pc(scaled), gradient_magnitude(scaled)


def fsim_parts_fast(stack: np.ndarray, data_range: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fsim_parts` with :func:`phase_congruency_fast`."""
    return _parts(stack, data_range, phase_congruency_fast)


def fsim_from_parts_fast(
    parts_a: tuple[np.ndarray, np.ndarray], parts_b: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """:func:`fsim_from_parts` in one pass a slice (:func:`fusion3d.metrics.kernels.fsim_sums`)."""
    (pc1, g1), (pc2, g2) = parts_a, parts_b
    num, den, total = kernels.fsim_sums(pc1, g1, pc2, g2, T1, T2)
    fallback = total / (pc1.shape[1] * pc1.shape[2])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), fallback)


def fsim_from_parts(
    parts_a: tuple[np.ndarray, np.ndarray], parts_b: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Per-slice FSIM, shape ``(S,)``, from :func:`fsim_parts` of two stacks."""
    pc1, g1 = parts_a
    pc2, g2 = parts_b
    s_pc = (2 * pc1 * pc2 + T1) / (pc1**2 + pc2**2 + T1)
    s_g = (2 * g1 * g2 + T2) / (g1**2 + g2**2 + T2)
    s_l = s_pc * s_g
    pc_m = np.maximum(pc1, pc2)
    num = (s_l * pc_m).sum(axis=(1, 2))
    den = pc_m.sum(axis=(1, 2))
    fallback = s_l.mean(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), fallback)


def fsim_slices(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """FSIM of every slice pair of two ``(S, H, W)`` stacks, shape ``(S,)``."""
    return fsim_from_parts(fsim_parts(a, data_range), fsim_parts(b, data_range))


def fsim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """FSIM of two 2D images (grey levels spanning ``data_range``)."""
    return float(fsim_slices(np.asarray(a)[None], np.asarray(b)[None], data_range)[0])
