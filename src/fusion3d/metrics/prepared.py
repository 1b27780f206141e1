"""The three protocols with the source-side work done once per subject.

Everything that depends only on a subject's MRI, PET and brain mask (the paper slice and
its FSIM and FMI parts, the brain region and its slices, the sources' histogram bins,
SSIM moments and phase congruency, their 8-bit stacks, VIF pyramids, Sobel strength and
orientation) is computed by :class:`SubjectSources` on first use and kept for every fused
image of that subject: :func:`score` then only computes the fused image's side.

The values equal those of the direct formulas (``fusion3d.metrics.protocols.direct_metrics``)
to round-off: ``tests/unit/metrics/test_metrics_prepared.py`` holds them to 1e-9 relative, and to 3e-7
for the three metrics computed in float32 in both paths (the textbook FSIM of ``paper`` and
``volume``, the ``volume`` SSIM), whose sums run in another order here (FFTW, compiled loops,
:mod:`fusion3d.metrics.kernels`). The definitions are in :mod:`fusion3d.metrics.protocols`,
:mod:`~fusion3d.metrics.published` and :mod:`~fusion3d.metrics.suite`. Memory: about 250 MB
for one 128^3 subject with all three protocols prepared, plus about 100 MB of FFTW buffers
for the phase congruency of a slice stack (kept for the next fused image of that shape).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from fusion3d.metrics import kernels, published, suite
from fusion3d.metrics.core import (
    SSIM_SIGMA,
    SSIM_TRUNCATE,
    as_image,
    gaussian_moments_fast,
    psnr_from_mse,
    ssim_map,
)
from fusion3d.metrics.fmi import WINDOW, gradient_feature
from fusion3d.metrics.fsim import fsim_from_parts_fast, fsim_parts_fast
from fusion3d.metrics.names import PAPER_NAMES, PROTOCOLS, VOLUME_NAMES

HIST_BINS = 100


def _check_mask(mask, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask: shape {mask.shape} differs from the images' {shape}")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("mask: must be boolean (or hold only 0 and 1)")
        mask = mask.astype(bool)
    return mask


def histogram_bins(x: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of every value of ``x`` as ``np.histogram2d`` assigns it (own min..max range).

    numpy's rule: ``bins + 1`` equal-width edges from ``linspace(min, max)`` (a constant
    sample gets ``value +- 0.5``), ``searchsorted(side='right') - 1``, and values equal to
    the last edge in the last bin.
    """
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    index = np.searchsorted(edges, x, side="right") - 1
    index[x == edges[-1]] = bins - 1
    return index


def _entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of the histogram ``counts`` (as ``core.entropy_of_counts``)."""
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


class SubjectSources:
    """A subject's MRI, PET and mask with their source-side metric work, computed once.

    Parameters
    ----------
    mri, pet
        Arrays of one shape: 3D volumes on the model grid (floats in [0, 1]), or 2D
        slices (``paper`` and ``suite2d`` only).
    mask
        Optional boolean brain mask of the same shape; ``None`` means ``mri > 0``.

    Each attribute below is computed on first use, so a subject scored under one protocol
    only prepares that protocol's parts.
    """

    def __init__(self, mri: np.ndarray, pet: np.ndarray, mask: np.ndarray | None = None):
        self.mri = as_image("mri", mri, (2, 3))
        self.pet = as_image("pet", pet, (2, 3))
        if self.mri.shape != self.pet.shape:
            raise ValueError(f"shape mismatch: mri {self.mri.shape}, pet {self.pet.shape}")
        if min(self.mri.shape[:2]) < 11:
            raise ValueError(f"images too small for an 11-px SSIM window: {self.mri.shape}")
        self.mask = _check_mask(mask, self.mri.shape)
        self.shape = self.mri.shape

    # -- shared -------------------------------------------------------------------------
    @cached_property
    def region(self) -> np.ndarray:
        """The brain region (the mask, else ``mri > 0``); an error when empty."""
        region = self.mri > 0 if self.mask is None else self.mask
        if not region.any():
            raise ValueError("mask: no brain voxels (mask empty, or MRI has no voxel > 0)")
        return region

    @cached_property
    def brain_slices(self) -> np.ndarray:
        """Indices of the last-axis slices holding brain voxels."""
        return np.flatnonzero(self.region.any(axis=(0, 1)))

    def stack(self, x: np.ndarray) -> np.ndarray:
        """The brain's axial slices of a volume as an ``(S, H, W)`` stack."""
        return np.moveaxis(x, -1, 0)[self.brain_slices]

    # -- paper --------------------------------------------------------------------------
    @cached_property
    def paper(self) -> list[dict]:
        """Per source: the float32 and float64 paper slice and its FSIM and FMI parts."""
        out = []
        for src in (self.mri, self.pet):
            s = src[..., src.shape[-1] // 2] if src.ndim == 3 else src
            s32 = published.as_slice32("source", s)
            out.append(
                {
                    "s64": s,
                    "s32": s32,
                    "published": published.fsim_parts(s32),
                    "zhang": fsim_parts_fast(s[None]),
                    "fmi": gradient_feature(s),
                }
            )
        return out

    # -- volume -------------------------------------------------------------------------
    @cached_property
    def volume(self) -> dict:
        """Region values and histogram bins, SSIM box and moments, FSIM parts of both sources."""
        if self.mri.ndim != 3:
            raise ValueError(f"mri: expected a 3D array, got shape {self.mri.shape}")
        region = self.region
        radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
        box = tuple(
            slice(max(int(ix.min()) - radius, 0), min(int(ix.max()) + radius + 1, n))
            for ix, n in zip(np.nonzero(region), region.shape, strict=True)
        )
        sources = []
        for src in (self.mri, self.pet):
            values = src[region]
            bins = histogram_bins(values, HIST_BINS)
            sub = src[box].astype(np.float32)
            sources.append(
                {
                    "values": values,
                    "bins": bins,
                    "entropy": _entropy(np.bincount(bins, minlength=HIST_BINS)),
                    "box32": sub,
                    "moments": gaussian_moments_fast(sub),
                    "fsim": fsim_parts_fast(self.stack(src)),
                }
            )
        return {"box": box, "region_box": region[box], "sources": sources}

    # -- suite2d ------------------------------------------------------------------------
    @cached_property
    def suite_kinds(self) -> dict[str, str]:
        """The 0..255 scale kind of each source (:func:`fusion3d.metrics.suite._scale_kind`)."""
        return {
            name: suite._scale_kind(name, x) for name, x in (("mri", self.mri), ("pet", self.pet))
        }

    def suite_parts(self, scale: str) -> dict:
        """The sources' 8-bit brain stacks and their suite parts for one shared ``scale``."""
        cache = self.__dict__.setdefault("_suite_parts", {})
        if scale not in cache:
            stacks = []
            for x in (self.mri, self.pet):
                s = x[None] if x.ndim == 2 else self.stack(x)
                s = np.clip(np.round(s * 255.0), 0.0, 255.0) if scale == "unit" else s
                stacks.append(np.ascontiguousarray(s, dtype=np.float64))
            cache[scale] = suite.prepare_sources(*stacks)
        return cache[scale]


def _paper_score(f: np.ndarray, src: SubjectSources) -> dict[str, float]:
    """The paper protocol of one fused image against prepared sources."""
    f = f[..., f.shape[-1] // 2] if f.ndim == 3 else f
    f32 = published.as_slice32("fused", f)
    parts_pub = published.fsim_parts(f32)
    parts_zhang = fsim_parts_fast(f[None])
    feature_f = gradient_feature(f)
    per_source = []
    for s in src.paper:
        per_source.append(
            {
                "psnr": published.psnr(f32, s["s32"]),
                "ssim": published.ssim(f32, s["s32"]),
                "nmi": published.nmi(f32, s["s32"]),
                "mi": published.mutual_information(f32, s["s32"]),
                "fsim": published.fsim_from_parts(parts_pub, s["published"]),
                "fsim_zhang": float(fsim_from_parts_fast(parts_zhang, s["zhang"])[0]),
                "fmi_haghighat": kernels.fmi_windows_mean(s["fmi"], feature_f, WINDOW),
            }
        )
    return {name: float(np.mean([v[name] for v in per_source])) for name in PAPER_NAMES}


def _volume_score(f: np.ndarray, src: SubjectSources) -> dict[str, float]:
    """The volume protocol of one fused image against prepared sources."""
    prep = src.volume
    fv = f[src.region]
    f_bins = histogram_bins(fv, HIST_BINS)
    h_f = _entropy(np.bincount(f_bins, minlength=HIST_BINS))
    f_box = f[prep["box"]].astype(np.float32)
    f_moments = gaussian_moments_fast(f_box)
    parts_f = fsim_parts_fast(src.stack(f))
    out: dict[str, list[float]] = {name: [] for name in VOLUME_NAMES}
    for s in prep["sources"]:
        out["psnr"].append(float(psnr_from_mse(1.0, float(np.mean((fv - s["values"]) ** 2)))))
        smap = ssim_map(
            f_box, s["box32"], 1.0, moments_a=f_moments, moments_b=s["moments"], fast=True
        )
        out["ssim"].append(float(smap[prep["region_box"]].mean(dtype=np.float64)))
        joint = np.bincount(f_bins * HIST_BINS + s["bins"], minlength=HIST_BINS * HIST_BINS)
        h_joint = _entropy(joint)
        h_sum = h_f + s["entropy"]
        out["nmi"].append(2.0 if h_joint <= 0.0 else h_sum / h_joint)
        out["mi"].append(max(h_sum - h_joint, 0.0))
        out["fsim_zhang"].append(float(fsim_from_parts_fast(parts_f, s["fsim"]).mean()))
    return {name: float(np.mean(out[name])) for name in VOLUME_NAMES}


def _suite_score(f: np.ndarray, src: SubjectSources) -> dict[str, float]:
    """The suite2d protocol of one fused image against prepared sources."""
    scale = suite.shared_scale({"fused": suite._scale_kind("fused", f), **src.suite_kinds})
    fs = f[None] if f.ndim == 2 else src.stack(f)
    if scale == "unit":
        fs = np.clip(np.round(fs * 255.0), 0.0, 255.0)
    values = suite.suite_prepared(
        np.ascontiguousarray(fs, dtype=np.float64), src.suite_parts(scale)
    )
    return {name: float(v.mean()) for name, v in values.items()}


def score(fused: np.ndarray, sources: SubjectSources, protocol: str) -> dict[str, float]:
    """Score one fused image against a subject's prepared sources under one protocol.

    Parameters
    ----------
    fused
        Array of the sources' shape (see :func:`fusion3d.metrics.compute_metrics`).
    sources
        The subject's :class:`SubjectSources`, reused for every fused image.
    protocol
        One of :data:`PROTOCOLS`.

    Returns
    -------
    dict
        Metric name -> value, as :func:`fusion3d.metrics.compute_metrics` returns them.

    Raises
    ------
    ValueError
        Unknown protocol, a fused image of another shape or with NaN/Inf values, a 2D
        image under ``volume``, an empty brain region.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: unknown {protocol!r}, expected one of {PROTOCOLS}")
    ndims = (3,) if protocol == "volume" else (2, 3)
    f = as_image("fused", fused, ndims)
    if f.shape != sources.shape:
        raise ValueError(
            f"shape mismatch: fused {f.shape}, mri {sources.shape}, pet {sources.shape}"
        )
    if protocol == "paper":
        return _paper_score(f, sources)
    if protocol == "volume":
        return _volume_score(f, sources)
    return _suite_score(f, sources)
