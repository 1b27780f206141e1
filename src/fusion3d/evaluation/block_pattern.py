"""A p-periodic block pattern in an image: spectral power at the patch frequency.

A network whose output is rendered patch by patch (a transposed convolution with
``kernel = stride = p``, a linear layer to ``p**3 C`` channels rearranged into blocks) can
leave a pattern of period ``p`` voxels in its images. :func:`block_pattern_ratio` measures
it along each axis, the same way for any image (a fused volume, its MRI, its PET), so that
they can be shown side by side:

1. the signal is the absolute first difference along the axis (``signal="gradient"``, the
   blocking measure of Wang, Bovik & Evans, 2000) or the intensity itself
   (``signal="intensity"``); with the gradient, both a pattern that repeats in every block
   (the same kernel applied everywhere) and blocks of random levels (edges at every block
   boundary) give a line at ``1/p``, where the intensity of random blocks has a zero;
2. inside the mask it is centred (its mean inside the mask subtracted) and set to zero
   outside, then multiplied by a Hann window along the axis;
3. the power of every line along the axis is evaluated at the frequency ``f0 = h/p``
   cycles per voxel (harmonic ``h``, 1 by default) and at the neighbours
   ``f0 +- k/n`` (``k`` in ``offsets``, by default 3, 4 and 5 bins, ``n`` the axis
   length) and summed over the lines;
4. the ratio is the power at ``f0`` over the power the neighbours predict there: a
   quadratic in frequency fitted (least squares) to the logarithm of their power, so
   that a power-law spectrum (natural images) and a Gaussian one (a blurred image, a
   PET) both give about 1.

The ratio is about 1 for an image without a ``p``-periodic pattern: within 0.75-1.3 on
smooth random 64^3 volumes (``tests/unit/evaluation/test_block_pattern.py``), 0.85-1.2 on
the model-grid MRI and PET of the synthetic study; it is much larger with one, and it does
not depend on the phase of the blocks nor on the intensity scale. On axes shorter than about
48 voxels, very smooth images (almost no power at ``1/p``) can read up to about 2. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SIGNALS", "block_pattern_ratio", "high_pass", "line_power"]

#: What is Fourier-analysed along each axis.
SIGNALS = ("gradient", "intensity")


def _check_inputs(volume: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` as float64 and ``mask`` as bool; ValueError for bad shapes, values, masks."""
    vol = np.asarray(volume)
    if vol.ndim not in (2, 3):
        raise ValueError(f"volume must be 2D or 3D, got shape {vol.shape}")
    if not np.issubdtype(vol.dtype, np.number) or np.issubdtype(vol.dtype, np.complexfloating):
        raise ValueError(f"volume must hold real numbers, got dtype {vol.dtype}")
    msk = np.asarray(mask)
    if msk.shape != vol.shape:
        raise ValueError(f"mask shape {msk.shape} differs from volume shape {vol.shape}")
    msk = msk > 0
    if not msk.any():
        raise ValueError("mask is empty (no positive voxel): nothing to measure")
    vol = vol.astype(np.float64)
    if not np.isfinite(vol[msk]).all():
        raise ValueError("volume has non-finite values inside the mask")
    return vol, msk


def _check_patch(patch_size: int, harmonic: int, offsets: Sequence[int]) -> tuple[int, ...]:
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)):
        raise ValueError(f"patch_size must be an integer >= 2, got {patch_size!r}")
    if patch_size < 2:
        raise ValueError(f"patch_size must be an integer >= 2, got {patch_size!r}")
    if isinstance(harmonic, bool) or not isinstance(harmonic, (int, np.integer)):
        raise ValueError(f"harmonic must be an integer, got {harmonic!r}")
    if not 1 <= harmonic <= patch_size // 2:
        raise ValueError(
            f"harmonic must be in 1..{patch_size // 2} (patch_size // 2), got {harmonic}"
        )
    offs = tuple(int(k) for k in offsets)
    if len(set(offs)) < 2 or any(k < 1 for k in offs):
        raise ValueError(
            f"offsets must be at least two different positive integers (bins), got {offsets!r}"
        )
    return offs


def line_power(
    volume: np.ndarray,
    mask: np.ndarray,
    axis: int,
    frequencies: Sequence[float],
    *,
    signal: str = "gradient",
) -> np.ndarray:
    """Power of the lines along ``axis`` at ``frequencies``, summed over the lines.

    Parameters
    ----------
    volume : ndarray
        2D or 3D image, real values (finite inside the mask).
    mask : ndarray
        Same shape; positive values are inside (e.g. the brain mask).
    axis : int
        Axis along which the lines run.
    frequencies : sequence of float
        Cycles per voxel (any real value; the spectrum of a real signal is even and
        1-periodic).
    signal : {"gradient", "intensity"}
        ``"gradient"``: the absolute first difference along ``axis``, kept where both
        voxels are inside the mask; ``"intensity"``: the image inside the mask.

    Returns
    -------
    ndarray
        ``(len(frequencies),)`` float64: ``sum over lines |sum_n w_n s_n e^{-2 pi i f n}|^2``
        with ``s`` the centred, masked signal and ``w`` a Hann window along the axis.

    Raises
    ------
    ValueError
        Shape mismatch, empty mask, non-finite values, an unknown ``signal`` or ``axis``.
    """
    vol, msk = _check_inputs(volume, mask)
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    if not -vol.ndim <= axis < vol.ndim:
        raise ValueError(f"axis {axis} out of range for a {vol.ndim}D volume")
    vol, msk = np.moveaxis(vol, axis, -1), np.moveaxis(msk, axis, -1)
    if signal == "gradient":
        sig = np.abs(np.diff(vol, axis=-1))
        inside = msk[..., 1:] & msk[..., :-1]
    else:
        sig, inside = vol, msk
    n = sig.shape[-1]
    if not inside.any():
        raise ValueError(f"no two neighbouring mask voxels along axis {axis}")
    sig = np.where(inside, sig - sig[inside].mean(), 0.0) * np.hanning(n)
    freqs = np.asarray(frequencies, dtype=np.float64)
    basis = np.exp(-2j * np.pi * np.outer(np.arange(n), freqs))  # (n, F)
    spectra = sig.reshape(-1, n) @ basis  # (lines, F)
    return (np.abs(spectra) ** 2).sum(axis=0)


def block_pattern_ratio(
    volume: np.ndarray,
    mask: np.ndarray,
    patch_size: int = 4,
    *,
    harmonic: int = 1,
    signal: str = "gradient",
    offsets: Sequence[int] = (3, 4, 5),
) -> np.ndarray:
    """Power at the patch frequency over the power beside it, along each axis.

    Parameters
    ----------
    volume : ndarray
        2D or 3D image (a fused volume, an MRI, a PET), real values.
    mask : ndarray
        Same shape; positive values are inside (the brain mask).
    patch_size : int
        Period ``p`` in voxels (the network's patch size), at least 2.
    harmonic : int
        ``h`` in ``f0 = h / p`` cycles per voxel, ``1 <= h <= p // 2`` (for ``p = 4``:
        1, the fundamental, or 2, the Nyquist frequency).
    signal : {"gradient", "intensity"}
        See :func:`line_power`. ``"gradient"`` (default) also detects blocks of random
        levels, whose intensity spectrum is zero at ``1/p``.
    offsets : sequence of int
        Neighbouring frequencies ``f0 +- k / n`` in bins of the axis length ``n``, at least
        two different ones (the fit has three parameters); the default (3, 4, 5) stays
        outside the main lobe of the Hann window.

    Returns
    -------
    ndarray
        ``(volume.ndim,)`` float64, one ratio per axis: ``P(f0) / exp(q(f0))`` with ``q``
        the quadratic fitted to ``log P(f0 +- k/n)``.
        About 1 without a ``p``-periodic pattern, much larger with one. NaN along an
        axis where the signal does not vary (a constant image).

    Raises
    ------
    ValueError
        Shape mismatch, empty mask, non-finite values inside the mask, a bad
        ``patch_size``, ``harmonic``, ``signal`` or ``offsets``, or an axis too short
        for the neighbours to lie between 0 and ``f0``.
    """
    offs = _check_patch(patch_size, harmonic, offsets)
    vol, msk = _check_inputs(volume, mask)
    f0 = harmonic / patch_size
    out = np.empty(vol.ndim)
    for axis in range(vol.ndim):
        n = vol.shape[axis] - (signal == "gradient")
        if max(offs) / n >= f0:
            raise ValueError(
                f"axis {axis} has {vol.shape[axis]} voxels: too short to compare the power at "
                f"{f0:g} cycles/voxel with neighbours {max(offs)} bins away (need more than "
                f"{max(offs) * patch_size / harmonic:g} samples)"
            )
        d = np.array([s * k / n for k in offs for s in (-1, 1)])
        power = line_power(vol, msk, axis, [f0, *(f0 + d)], signal=signal)
        if power[1:].min() <= 0 or not np.isfinite(power).all():
            out[axis] = np.nan
            continue
        # log P(f0 + d) ~ a + b d + c d^2; the prediction at f0 is exp(a)
        design = np.stack([np.ones_like(d), d, d**2], axis=1)
        a = np.linalg.lstsq(design, np.log(power[1:]), rcond=None)[0][0]
        out[axis] = power[0] / np.exp(a)
    return out


def high_pass(image: np.ndarray, size: int = 4) -> np.ndarray:
    """The image minus its moving average over ``size`` voxels along every axis.

    A box of ``size`` voxels has zeros at the multiples of ``1/size`` cycles per voxel, so
    the residual keeps a ``size``-periodic pattern whole while removing the smooth content;
    it is the image shown beside a fused one to make a block pattern visible.

    Parameters
    ----------
    image : ndarray
        Any number of dimensions, real values.
    size : int
        Box length in voxels (>= 1); edges are padded by repeating the border.

    Returns
    -------
    ndarray
        Float64, the shape of ``image``.
    """
    img = np.asarray(image, dtype=np.float64)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    smooth = img
    for axis in range(img.ndim):
        # box over [i - size//2, i - size//2 + size) by cumulative sums on an edge-padded axis
        lo, hi = size // 2, size - 1 - size // 2
        pad = [(0, 0)] * img.ndim
        pad[axis] = (lo + 1, hi)
        c = np.cumsum(np.pad(smooth, pad, mode="edge"), axis=axis)
        n = img.shape[axis]
        upper = np.take(c, np.arange(size, size + n), axis=axis)
        lower = np.take(c, np.arange(0, n), axis=axis)
        smooth = (upper - lower) / size
    return img - smooth
