"""The three evaluation protocols behind :func:`compute_metrics`.

- ``paper``: what the published DC2Fusion evaluation code computes
  (:mod:`fusion3d.metrics.published`: its ``evaluation_metrics.py`` as its
  ``infer_singleImage.py`` calls it). One axial slice, ``vol[..., shape[-1] // 2]``
  (index 64 of a 128^3 grid, the middle slice of any other grid), cast to float32; a
  2D input is used as the slice. Each metric is ``mean(metric(F, MRI), metric(F, PET))``
  on the whole slice (the mask is not used): ``psnr`` (data range 1), ``ssim``
  (torchmetrics <= 1.4.1: Gaussian 11/1.5, 5-px border cropped), ``nmi`` (100 bins),
  ``mi`` (10-bin density histogram, nats) and ``fsim`` (phasepack phase congruency
  summed over 6 orientations, OpenCV ``CV_16U`` Scharr gradients). Two other readings
  of the paper's "FMI" column, on the same slice and never under the paper's names:
  ``fsim_zhang`` (the textbook FSIM, :mod:`fusion3d.metrics.fsim`) and
  ``fmi_haghighat`` (:mod:`fusion3d.metrics.fmi`).
- ``volume``: 3D, within the brain mask (``mask=None`` -> ``MRI > 0``): ``psnr`` from
  the MSE over mask voxels, ``ssim`` as the mask mean of the 3D Gaussian SSIM map
  (sigma 1.5 on all axes, reflect borders), ``nmi`` and ``mi`` (nats) from 100-bin
  histograms of the mask voxels, and ``fsim_zhang`` (the textbook FSIM) as the mean
  over the axial slices (last axis) that contain mask voxels, each slice scored whole.
  Same mean-over-sources convention.
- ``suite2d``: the 2D field's suite as MMIF-CDDFuse's evaluator computes it
  (:mod:`fusion3d.metrics.suite`, which states every convention), on 0..255 grey
  values: 8-bit inputs as they are, floats in [0, 1] by one scale shared by the three
  images and every slice, ``round(255 x)`` (:func:`~fusion3d.metrics.suite.shared_8bit`;
  never a per-image min-max). Averaged over the axial slices that contain mask
  voxels; a 2D input is scored as one slice.

PSNR of identical images is reported as :data:`fusion3d.metrics.core.PSNR_MAX_DB`
(100 dB) instead of ``inf``.

:func:`compute_metrics` goes through :mod:`fusion3d.metrics.prepared` (the sources' side
computed once, :class:`~fusion3d.metrics.prepared.SubjectSources`, reusable for every
fused image of a subject); :func:`direct_metrics` computes the same values straight from
the definitions, one (fused, source) pair at a time, and is what the tests hold the
prepared path to.
"""

from __future__ import annotations

import numpy as np

from fusion3d.metrics import published
from fusion3d.metrics.core import (
    as_image,
    masked_ssim_3d,
    mutual_information,
    nmi,
    psnr_from_mse,
)
from fusion3d.metrics.fmi import fmi_haghighat
from fusion3d.metrics.fsim import fsim_from_parts, fsim_parts
from fusion3d.metrics.names import PAPER_NAMES, PROTOCOLS, VOLUME_NAMES
from fusion3d.metrics.prepared import SubjectSources, score
from fusion3d.metrics.suite import shared_8bit, suite_slices

HIST_BINS = 100


def paper_slice_index(shape: tuple[int, ...]) -> int:
    """Index along the last axis of the paper's evaluation slice (64 for 128^3)."""
    return shape[-1] // 2


def _check(fused, mri, pet, mask, protocol: str):
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: unknown {protocol!r}, expected one of {PROTOCOLS}")
    ndims = (3,) if protocol == "volume" else (2, 3)
    f = as_image("fused", fused, ndims)
    m = as_image("mri", mri, ndims)
    p = as_image("pet", pet, ndims)
    if not (f.shape == m.shape == p.shape):
        raise ValueError(f"shape mismatch: fused {f.shape}, mri {m.shape}, pet {p.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != f.shape:
            raise ValueError(f"mask: shape {mask.shape} differs from the images' {f.shape}")
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError("mask: must be boolean (or hold only 0 and 1)")
            mask = mask.astype(bool)
    if min(f.shape[:2]) < 11:
        raise ValueError(f"images too small for an 11-px SSIM window: {f.shape}")
    return f, m, p, mask


def _brain_slices(m: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Boolean mask of shape ``(H, W, D)`` -> indices of last-axis slices with brain."""
    region = m > 0 if mask is None else mask
    index = np.flatnonzero(region.any(axis=(0, 1)))
    if index.size == 0:
        raise ValueError("mask: no brain voxels (mask empty, or MRI has no voxel > 0)")
    return index


def _paper_pair(fused: np.ndarray, source: np.ndarray, parts: dict) -> dict[str, float]:
    """Every paper-protocol metric of one (fused, source) slice pair.

    ``parts`` holds the fused slice's reusable FSIM parts: ``"published"`` (float32
    phase congruency sum and Scharr magnitude) and ``"zhang"`` (textbook FSIM parts).
    """
    f32 = published.as_slice32("fused", fused)
    s32 = published.as_slice32("source", source)
    return {
        "psnr": published.psnr(f32, s32),
        "ssim": published.ssim(f32, s32),
        "nmi": published.nmi(f32, s32),
        "mi": published.mutual_information(f32, s32),
        "fsim": published.fsim_from_parts(parts["published"], published.fsim_parts(s32)),
        "fsim_zhang": float(fsim_from_parts(parts["zhang"], fsim_parts(source[None]))[0]),
        "fmi_haghighat": fmi_haghighat(fused, source),
    }


def _paper(f, m, p) -> dict[str, float]:
    """The paper protocol (see the module docstring) on the slice of ``f``, ``m``, ``p``."""
    if f.ndim == 3:
        k = paper_slice_index(f.shape)
        f, m, p = f[..., k], m[..., k], p[..., k]
    parts = {"published": published.fsim_parts(f), "zhang": fsim_parts(f[None])}
    per_source = [_paper_pair(f, src, parts) for src in (m, p)]
    return {name: float(np.mean([v[name] for v in per_source])) for name in PAPER_NAMES}


def _volume(f, m, p, mask) -> dict[str, float]:
    region = m > 0 if mask is None else mask
    if not region.any():
        raise ValueError("mask: no brain voxels (mask empty, or MRI has no voxel > 0)")
    out: dict[str, list[float]] = {name: [] for name in VOLUME_NAMES}
    fv = f[region]
    for src in (m, p):
        sv = src[region]
        out["psnr"].append(float(psnr_from_mse(1.0, float(np.mean((fv - sv) ** 2)))))
        out["ssim"].append(masked_ssim_3d(f, src, region, 1.0))
        out["nmi"].append(nmi(fv, sv, HIST_BINS))
        out["mi"].append(mutual_information(fv, sv, HIST_BINS))
    index = _brain_slices(m, mask)
    stacks = [np.moveaxis(x, -1, 0)[index] for x in (f, m, p)]
    parts_f, parts_m, parts_p = (fsim_parts(s) for s in stacks)
    out["fsim_zhang"] = [float(fsim_from_parts(parts_f, x).mean()) for x in (parts_m, parts_p)]
    return {name: float(np.mean(out[name])) for name in VOLUME_NAMES}


def _suite2d(f, m, p, mask) -> dict[str, float]:
    """Mean suite metric over the brain's axial slices, on one shared 0..255 scale."""
    eight = shared_8bit(f, m, p)
    if f.ndim == 2:
        stacks = [x[None] for x in eight]
    else:
        index = _brain_slices(m, mask)
        stacks = [np.moveaxis(x, -1, 0)[index] for x in eight]
    values = suite_slices(*stacks)
    return {name: float(v.mean()) for name, v in values.items()}


def direct_metrics(
    fused: np.ndarray,
    mri: np.ndarray,
    pet: np.ndarray,
    *,
    protocol: str,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """:func:`compute_metrics` straight from the definitions (no source-side reuse).

    Same arguments, values and errors as :func:`compute_metrics`; slower, kept as the
    reference the prepared path is tested against.
    """
    f, m, p, mask = _check(fused, mri, pet, mask, protocol)
    if protocol == "paper":
        return _paper(f, m, p)
    if protocol == "volume":
        return _volume(f, m, p, mask)
    return _suite2d(f, m, p, mask)


def compute_metrics(
    fused: np.ndarray,
    mri: np.ndarray,
    pet: np.ndarray,
    *,
    protocol: str,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Score a fused image against its MRI and PET sources under one protocol.

    Parameters
    ----------
    fused, mri, pet
        Arrays of one shape: 3D volumes on the model grid (floats in [0, 1] after
        min-max scaling), or 2D slices for ``paper`` and ``suite2d``.
    protocol
        One of :data:`PROTOCOLS` (see the module docstring for the definitions).
    mask
        Optional boolean brain mask of the same shape (``volume``, ``suite2d``);
        ``None`` means ``mri > 0``. ``paper`` scores the whole slice.

    Returns
    -------
    dict
        Metric name -> value (plain floats; PSNR capped at 100 dB).

    Raises
    ------
    ValueError
        Unknown protocol, wrong number of dimensions, shape mismatch, NaN/Inf values,
        a non-boolean or empty mask.
    """
    f, m, p, mask = _check(fused, mri, pet, mask, protocol)
    return score(f, SubjectSources(m, p, mask), protocol)
