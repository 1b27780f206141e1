"""Compiled per-pixel loops of the prepared metric path (numba), one pass where numpy makes many.

Each kernel computes what a numpy expression of :mod:`fusion3d.metrics.fsim`,
:mod:`~fusion3d.metrics.fmi` or :mod:`~fusion3d.metrics.suite` computes, in the same
precision and with the same guards; only the order of some sums differs (round-off:
``tests/unit/metrics/test_metrics_kernels.py`` holds each kernel to its numpy form,
``benchmarks/bench_metrics_same.py`` the three protocols to the direct formulas).
``error_model="numpy"`` gives IEEE division (no Python ``ZeroDivisionError`` branch), which
lets LLVM vectorise the loops; ``fastmath`` stays off, so no operation is reordered or fused
beyond what is written here. Compiled code is cached on disk (``cache=True``) after the first
call of a process.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "error_model": "numpy", "fastmath": False, "nogil": True}


@numba.njit(**_JIT)
def pc_orientation(responses, out, epsilon):
    """One orientation of ``fsim.phase_congruency``: energy, amplitude sum, noise amplitude.

    Parameters
    ----------
    responses
        ``(4, N)`` complex64: the 4 scales' filter responses of N pixels.
    out
        ``(3, N)`` float32: row 0 is the running amplitude sum (``+= |e_s|`` for each scale
        in turn), row 1 receives the orientation's energy before the noise threshold, row 2
        the smallest scale's squared amplitude.
    epsilon
        float32 added to the summed response's modulus (``fsim.EPSILON``).
    """
    e0, e1, e2, e3 = responses[0], responses[1], responses[2], responses[3]
    for j in range(out.shape[1]):
        r0, i0 = e0[j].real, e0[j].imag
        r1, i1 = e1[j].real, e1[j].imag
        r2, i2 = e2[j].real, e2[j].imag
        r3, i3 = e3[j].real, e3[j].imag
        sum_e = ((r0 + r1) + r2) + r3
        sum_o = ((i0 + i1) + i2) + i3
        x_energy = np.sqrt(sum_e * sum_e + sum_o * sum_o) + epsilon
        mean_e = sum_e / x_energy
        mean_o = sum_o / x_energy
        energy = sum_e * mean_e + sum_o * mean_o
        amplitude = out[0, j]
        amplitude += np.sqrt(r0 * r0 + i0 * i0)
        amplitude += np.sqrt(r1 * r1 + i1 * i1)
        amplitude += np.sqrt(r2 * r2 + i2 * i2)
        amplitude += np.sqrt(r3 * r3 + i3 * i3)
        out[0, j] = amplitude
        energy -= abs(r0 * mean_o - i0 * mean_e)
        energy -= abs(r1 * mean_o - i1 * mean_e)
        energy -= abs(r2 * mean_o - i2 * mean_e)
        energy -= abs(r3 * mean_o - i3 * mean_e)
        out[1, j] = energy
        out[2, j] = r0 * r0 + i0 * i0


@numba.njit(**_JIT)
def add_above_threshold(total, energy, threshold, per_slice):
    """``total += max(energy - threshold[slice], 0)`` on flat float32 arrays, ``per_slice`` px a slice."""
    for s in range(threshold.shape[0]):
        t = threshold[s]
        for j in range(s * per_slice, (s + 1) * per_slice):
            v = energy[j] - t
            total[j] += v if v > 0 else np.float32(0.0)


@numba.njit(**_JIT)
def correlate_rows_valid(x, w):
    """``scipy.ndimage.correlate1d(x, w, axis=1)`` of an ``(S, H, W)`` stack, 'valid' rows only.

    Sums in the dtype of ``x`` (float64, or float32 with float32 weights).
    """
    n_slices, rows, cols = x.shape
    n = w.shape[0]
    valid = max(rows - n + 1, 0)  # none when the window is longer than the slice
    out = np.zeros((n_slices, valid, cols), x.dtype)
    for s in range(n_slices):
        for i in range(valid):
            for k in range(n):
                wk = w[k]
                for j in range(cols):
                    out[s, i, j] += wk * x[s, i + k, j]
    return out


@numba.njit(**_JIT)
def correlate_cols_valid(x, w):
    """``scipy.ndimage.correlate1d(x, w, axis=2)`` of an ``(S, H, W)`` stack, 'valid' columns only.

    Sums in the dtype of ``x`` (float64, or float32 with float32 weights).
    """
    n_slices, rows, cols = x.shape
    n = w.shape[0]
    valid = max(cols - n + 1, 0)
    out = np.zeros((n_slices, rows, valid), x.dtype)
    for s in range(n_slices):
        for i in range(rows):
            for k in range(n):
                wk = w[k]
                for j in range(valid):
                    out[s, i, j] += wk * x[s, i, j + k]
    return out


@numba.njit(**_JIT)
def fsim_sums(pc1, g1, pc2, g2, t1, t2):
    """Per-slice ``sum(S_L PC_m)``, ``sum(PC_m)`` and ``sum(S_L)`` of ``fsim.fsim_from_parts``.

    All inputs ``(S, H, W)`` float64; returns an ``(3, S)`` array.
    """
    n_slices = pc1.shape[0]
    out = np.zeros((3, n_slices))
    for s in range(n_slices):
        a, b, c = pc1[s].ravel(), pc2[s].ravel(), g1[s].ravel()
        d = g2[s].ravel()
        num = 0.0
        den = 0.0
        total = 0.0
        for j in range(a.shape[0]):
            s_pc = (2 * a[j] * b[j] + t1) / (a[j] * a[j] + b[j] * b[j] + t1)
            s_g = (2 * c[j] * d[j] + t2) / (c[j] * c[j] + d[j] * d[j] + t2)
            s_l = s_pc * s_g
            pc_m = max(a[j], b[j])
            num += s_l * pc_m
            den += pc_m
            total += s_l
        out[0, s] = num
        out[1, s] = den
        out[2, s] = total
    return out


@numba.njit(**_JIT)
def _window_pdf(feature, i, j, k, out):
    """The 3x3 (k x k) window at ``(i, j)`` minus its minimum, normalised (uniform if flat)."""
    lo = feature[i, j]
    for a in range(k):
        for b in range(k):
            lo = min(lo, feature[i + a, j + b])
    total = 0.0
    for a in range(k):
        for b in range(k):
            out[a * k + b] = feature[i + a, j + b] - lo
            total += out[a * k + b]
    m = k * k
    for q in range(m):
        out[q] = out[q] / total if total > 0 else 1.0 / m


@numba.njit(**_JIT)
def _entropy_bits(p):
    h = 0.0
    for q in range(p.shape[0]):
        if p[q] > 0:
            h -= p[q] * np.log2(p[q])
    return h


@numba.njit(**_JIT)
def _pair_fmi(pa, pf, ca, cf, joint):
    """``fmi.window_fmi`` of one window's two pdfs (scratch arrays ``ca``, ``cf``, ``joint``)."""
    m = pa.shape[0]
    same = True
    mean_a = 0.0
    mean_f = 0.0
    for q in range(m):
        same = same and abs(pa[q] - pf[q]) <= 1e-12
        mean_a += pa[q]
        mean_f += pf[q]
    if same:
        return 1.0
    mean_a /= m
    mean_f /= m
    saa = sff = saf = 0.0
    acc_a = acc_f = 0.0
    for q in range(m):
        da, df = pa[q] - mean_a, pf[q] - mean_f
        saa += da * da
        sff += df * df
        saf += da * df
        acc_a += pa[q]
        acc_f += pf[q]
        ca[q] = acc_a
        cf[q] = acc_f
    den = np.sqrt(saa * sff)
    corr = min(max(saf / den if den > 0 else 0.0, -1.0), 1.0)
    hj = 0.0
    for a in range(m):
        for b in range(m):
            joint[a + 1, b + 1] = _copula(ca[a], cf[b], corr)
    for a in range(m):
        for b in range(m):
            v = (joint[a + 1, b + 1] - joint[a, b + 1]) - (joint[a + 1, b] - joint[a, b])
            if v > 0:
                hj -= v * np.log2(v)
    hsum = _entropy_bits(pa) + _entropy_bits(pf)
    value = 2.0 * (hsum - hj) / hsum if hsum > 0 else 0.0
    return min(max(value, 0.0), 1.0)


@numba.njit(**_JIT)
def _copula(p, q, corr):
    """Nelsen's CDF of two window CDF values driven by their correlation (``fmi.window_fmi``)."""
    outer = p * q
    if corr >= 0:
        return corr * min(p, q) + (1 - corr) * outer
    return -corr * max(p + q - 1.0, 0.0) + (1 + corr) * outer


@numba.njit(**_JIT)
def fmi_windows_mean(feature_a, feature_f, k):
    """Mean over the ``k x k`` windows of ``fmi.window_fmi`` of two 2D feature images."""
    rows, cols = feature_a.shape
    m = k * k
    pa, pf = np.empty(m), np.empty(m)
    ca, cf = np.empty(m), np.empty(m)
    joint = np.zeros((m + 1, m + 1))
    total = 0.0
    for i in range(rows - k + 1):
        for j in range(cols - k + 1):
            _window_pdf(feature_a, i, j, k, pa)
            _window_pdf(feature_f, i, j, k, pf)
            total += _pair_fmi(pa, pf, ca, cf, joint)
    return total / ((rows - k + 1) * (cols - k + 1))


@numba.njit(**_JIT)
def mutual_information_grey(ia, ib):
    """Per-slice MI (nats) of two ``(S, P)`` int64 grey-level stacks (0..255), one pass a slice.

    As ``suite.mutual_information_grey``: joint counts of ``256 ia + ib``, marginals from
    the grey levels, only non-empty joint bins summed; counts are kept in one 256 x 256
    array that is reset bin by bin after each slice.
    """
    n_slices, n_px = ia.shape
    counts = np.zeros(65536, np.int64)
    pa = np.zeros(256)
    pb = np.zeros(256)
    touched = np.empty(n_px, np.int64)
    out = np.zeros(n_slices)
    for s in range(n_slices):
        n_touched = 0
        pa[:] = 0.0
        pb[:] = 0.0
        for p in range(n_px):
            a, b = ia[s, p], ib[s, p]
            pa[a] += 1.0
            pb[b] += 1.0
            code = a * 256 + b
            if counts[code] == 0:
                touched[n_touched] = code
                n_touched += 1
            counts[code] += 1
        total = 0.0
        for t in range(n_touched):
            code = touched[t]
            pj = counts[code] / n_px
            total += pj * np.log(pj / ((pa[code // 256] / n_px) * (pb[code % 256] / n_px)))
            counts[code] = 0
        out[s] = total
    return out


@numba.njit(**_JIT)
def ssim_uniform_means(ux, vx, uy, vy, uxy, cov_norm, c1, c2):
    """Per-slice mean of ``suite.ssim_uniform``'s SSIM map from its window statistics.

    ``ux``, ``vx``, ``uy``, ``vy`` are the two images' local means and sample variances and
    ``uxy`` the local mean of their product, all ``(S, H', W')`` (the pixels the mean
    covers); ``vxy = cov_norm (uxy - ux uy)`` as there.
    """
    n_slices, rows, cols = ux.shape
    out = np.zeros(n_slices)
    for s in range(n_slices):
        total = 0.0
        for i in range(rows):
            for j in range(cols):
                a, b = ux[s, i, j], uy[s, i, j]
                vxy = cov_norm * (uxy[s, i, j] - a * b)
                num = (2 * a * b + c1) * (2 * vxy + c2)
                total += num / ((a * a + b * b + c1) * (vx[s, i, j] + vy[s, i, j] + c2))
        out[s] = total / (rows * cols)
    return out
