"""Classic (non-learned) 3D MRI-PET fusion baselines.

Every method takes two co-registered volumes on the same voxel grid, scaled to
``[0, 1]`` (the model grid written by the preprocess stage), and returns a
float32 volume of the same shape. All methods are exact on identical inputs:
fusing a volume with itself gives the volume back (up to float rounding).

Methods (``METHODS``):

- ``average``: weighted average ``w_mri * mri + w_pet * pet`` (weights normalised
  to sum to one, default 0.5 / 0.5);
- ``maximum``: voxel-wise maximum;
- ``pca``: weighted average with weights from the principal eigenvector of the
  2x2 covariance matrix of the two intensity distributions;
- ``wavelet``: 3D discrete wavelet transform (``pywt.wavedecn``): average of the
  approximation coefficients, max-abs choice of every detail coefficient;
- ``laplacian``: 3D Laplacian pyramid (Gaussian pyramid built with
  ``scipy.ndimage``): max-abs choice on every detail level, average at the base.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pywt
from scipy import ndimage

from fusion3d.io import load_nifti, save_nifti
from fusion3d.methods import CLASSIC_METHODS

#: The classic methods (:data:`fusion3d.methods.CLASSIC_METHODS`).
METHODS: tuple[str, ...] = CLASSIC_METHODS

#: Tolerance on the ``[0, 1]`` input range (float rounding of min-max scaling).
RANGE_TOLERANCE = 1e-4

#: Keyword parameters each method accepts, with their defaults.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "average": {"weights": (0.5, 0.5)},
    "maximum": {},
    "pca": {},
    "wavelet": {"wavelet": "db2", "level": 3, "mode": "symmetric"},
    "laplacian": {"levels": 4, "sigma": 1.0},
}


def _check_inputs(mri: np.ndarray, pet: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two fusion inputs and return them as float64 arrays."""
    mri = np.asarray(mri)
    pet = np.asarray(pet)
    for name, arr in (("mri", mri), ("pet", pet)):
        if arr.ndim != 3:
            raise ValueError(f"{name}: expected a 3D array, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{name}: empty array of shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} NaN/Inf voxels")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise ValueError(
                f"{name}: intensities must lie in [0, 1] (min-max scaled), got [{lo:.4g}, {hi:.4g}]"
            )
    if mri.shape != pet.shape:
        raise ValueError(f"shape mismatch: mri {mri.shape} vs pet {pet.shape}")
    return mri.astype(np.float64), pet.astype(np.float64)


def _normalise_weights(weights: Sequence[float]) -> tuple[float, float]:
    """Check a pair of non-negative weights and scale them to sum to one."""
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights: expected two numbers, got {weights!r}") from exc
    if len(w) != 2:
        raise ValueError(f"weights: expected two numbers (mri, pet), got {len(w)}")
    if not all(np.isfinite(w)) or min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"weights: must be finite, non-negative and not both zero, got {w}")
    total = w[0] + w[1]
    return w[0] / total, w[1] / total


def fuse_average(
    mri: np.ndarray, pet: np.ndarray, weights: Sequence[float] = (0.5, 0.5)
) -> np.ndarray:
    """Weighted average ``w_mri * mri + w_pet * pet``; weights are normalised to sum to one."""
    w_mri, w_pet = _normalise_weights(weights)
    return w_mri * mri + w_pet * pet


def fuse_maximum(mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
    """Voxel-wise maximum of the two volumes."""
    return np.maximum(mri, pet)


def pca_weights(mri: np.ndarray, pet: np.ndarray) -> tuple[float, float]:
    """Fusion weights from the principal eigenvector of the 2x2 intensity covariance.

    The eigenvector belonging to the largest eigenvalue of ``cov([mri, pet])``
    is taken in absolute value and scaled to sum to one. When both volumes are
    constant (zero covariance) the weights are 0.5 / 0.5.
    """
    cov = np.cov(np.stack([np.ravel(mri), np.ravel(pet)]))
    if not np.isfinite(cov).all() or np.allclose(cov, 0.0):
        return 0.5, 0.5
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending eigenvalues
    v = np.abs(eigvecs[:, int(np.argmax(eigvals))])
    if v.sum() <= 0:
        return 0.5, 0.5
    v = v / v.sum()
    return float(v[0]), float(v[1])


def fuse_pca(mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
    """PCA fusion: weighted average with weights from :func:`pca_weights`."""
    w_mri, w_pet = pca_weights(mri, pet)
    return w_mri * mri + w_pet * pet


def _max_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise choice of the coefficient with the larger magnitude (ties -> ``a``)."""
    return np.where(np.abs(a) >= np.abs(b), a, b)


def fuse_wavelet(
    mri: np.ndarray,
    pet: np.ndarray,
    wavelet: str = "db2",
    level: int = 3,
    mode: str = "symmetric",
) -> np.ndarray:
    """3D DWT fusion: average approximation, max-abs detail coefficients.

    ``level`` is lowered to the largest level the shape allows for ``wavelet``
    (at least 1). The reconstruction of an odd-sized volume is one voxel
    longer along that axis; it is cropped back to the input shape.
    """
    try:
        wav = pywt.Wavelet(wavelet)
    except ValueError as exc:
        raise ValueError(f"wavelet: unknown wavelet {wavelet!r}") from exc
    if mode not in pywt.Modes.modes:
        raise ValueError(f"mode: unknown signal extension mode {mode!r} ({pywt.Modes.modes})")
    if int(level) < 1:
        raise ValueError(f"level: must be >= 1, got {level}")
    max_level = pywt.dwtn_max_level(mri.shape, wav)
    lev = max(1, min(int(level), max_level))
    with warnings.catch_warnings():
        # A tiny volume gets one level with boundary effects: still exactly invertible.
        warnings.filterwarnings("ignore", message="Level value of", category=UserWarning)
        c_mri = pywt.wavedecn(mri, wav, mode=mode, level=lev)
        c_pet = pywt.wavedecn(pet, wav, mode=mode, level=lev)
    fused: list[Any] = [0.5 * (c_mri[0] + c_pet[0])]
    for d_mri, d_pet in zip(c_mri[1:], c_pet[1:], strict=True):
        fused.append({key: _max_abs(d_mri[key], d_pet[key]) for key in d_mri})
    out = pywt.waverecn(fused, wav, mode=mode)
    return out[tuple(slice(0, n) for n in mri.shape)]


def _reduce(vol: np.ndarray, sigma: float) -> np.ndarray:
    """One Gaussian-pyramid step: blur, then halve every axis (ceil)."""
    blurred = ndimage.gaussian_filter(vol, sigma=sigma, mode="nearest")
    target = tuple((n + 1) // 2 for n in vol.shape)
    return _resize(blurred, target)


def _resize(vol: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of ``vol`` onto ``shape`` (voxel-centre aligned)."""
    factors = [t / s for t, s in zip(shape, vol.shape, strict=True)]
    out = ndimage.zoom(vol, factors, order=1, mode="nearest", grid_mode=True)
    if out.shape != shape:  # guard against rounding in zoom's output shape
        pad = [(0, max(0, t - o)) for t, o in zip(shape, out.shape, strict=True)]
        out = np.pad(out, pad, mode="edge")[tuple(slice(0, t) for t in shape)]
    return out


def laplacian_pyramid(vol: np.ndarray, levels: int, sigma: float = 1.0) -> list[np.ndarray]:
    """3D Laplacian pyramid: ``levels`` detail volumes then the Gaussian base.

    ``vol == details[0] + expand(details[1] + expand(... + base))`` exactly,
    because each detail is defined as ``G_k - expand(G_{k+1})``.
    """
    pyramid: list[np.ndarray] = []
    current = vol
    for _ in range(levels):
        smaller = _reduce(current, sigma)
        pyramid.append(current - _resize(smaller, current.shape))
        current = smaller
    pyramid.append(current)
    return pyramid


def reconstruct_laplacian(pyramid: Sequence[np.ndarray]) -> np.ndarray:
    """Invert :func:`laplacian_pyramid`."""
    current = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        current = detail + _resize(current, detail.shape)
    return current


def fuse_laplacian(
    mri: np.ndarray, pet: np.ndarray, levels: int = 4, sigma: float = 1.0
) -> np.ndarray:
    """Laplacian-pyramid fusion: max-abs on detail levels, average at the base.

    ``levels`` is lowered so that the coarsest level keeps at least 2 voxels
    along the shortest axis.
    """
    if int(levels) < 1:
        raise ValueError(f"levels: must be >= 1, got {levels}")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma: must be > 0, got {sigma}")
    max_levels = max(1, int(np.floor(np.log2(max(2, min(mri.shape))))))
    lev = min(int(levels), max_levels)
    p_mri = laplacian_pyramid(mri, lev, sigma)
    p_pet = laplacian_pyramid(pet, lev, sigma)
    fused = [_max_abs(a, b) for a, b in zip(p_mri[:-1], p_pet[:-1], strict=True)]
    fused.append(0.5 * (p_mri[-1] + p_pet[-1]))
    return reconstruct_laplacian(fused)


_FUNCTIONS = {
    "average": fuse_average,
    "maximum": fuse_maximum,
    "pca": fuse_pca,
    "wavelet": fuse_wavelet,
    "laplacian": fuse_laplacian,
}


def fuse(method: str, mri: np.ndarray, pet: np.ndarray, **params: Any) -> np.ndarray:
    """Fuse two 3D volumes in ``[0, 1]`` with a classic method.

    Parameters
    ----------
    method
        One of :data:`METHODS`.
    mri, pet
        3D arrays of the same shape, intensities in ``[0, 1]``.
    **params
        Method parameters (see :data:`DEFAULT_PARAMS`); unknown keys raise.

    Returns
    -------
    numpy.ndarray
        float32 fused volume of the input shape, clipped to ``[0, 1]``.

    Raises
    ------
    ValueError
        Unknown method or parameter, non-3D or mismatched inputs, values
        outside ``[0, 1]`` or non-finite.
    """
    if method not in _FUNCTIONS:
        raise ValueError(f"method: unknown fusion method {method!r}; expected one of {METHODS}")
    unknown = sorted(set(params) - set(DEFAULT_PARAMS[method]))
    if unknown:
        allowed = sorted(DEFAULT_PARAMS[method]) or "none"
        raise ValueError(f"{method}: unknown parameter(s) {unknown}; allowed: {allowed}")
    mri64, pet64 = _check_inputs(mri, pet)
    out = _FUNCTIONS[method](mri64, pet64, **params)
    # Wavelet / pyramid reconstructions can overshoot by a little: stay in [0, 1].
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def fuse_items(
    method: str,
    items: Iterable[tuple[str, str | os.PathLike, str | os.PathLike]],
    out_dir: str | os.PathLike,
    *,
    params: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Fuse every ``(subject_id, mri_path, pet_path)`` and write the results.

    Each fused volume is written atomically as
    ``<out_dir>/<subject_id>_fused.nii.gz`` (float32) with the MRI's affine.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject_id``, ``fused_path`` (one row per item, input order).

    Raises
    ------
    ValueError
        No items, a duplicate subject id, an item that is not a triple, images
        whose shapes or affines differ, or any error of :func:`fuse`.
    FileNotFoundError
        A missing input image.
    """
    if method not in _FUNCTIONS:
        raise ValueError(f"method: unknown fusion method {method!r}; expected one of {METHODS}")
    params = dict(params or {})
    out_dir = Path(out_dir)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in items:
        if len(item) != 3:
            raise ValueError(f"items: expected (subject_id, mri_path, pet_path), got {item!r}")
        subject_id, mri_path, pet_path = str(item[0]), item[1], item[2]
        if not subject_id or "/" in subject_id:
            raise ValueError(f"items: invalid subject_id {subject_id!r}")
        if subject_id in seen:
            raise ValueError(f"items: duplicate subject_id {subject_id!r}")
        seen.add(subject_id)
        mri, mri_affine = load_nifti(mri_path)
        pet, pet_affine = load_nifti(pet_path)
        if mri.shape != pet.shape:
            raise ValueError(
                f"{subject_id}: shape mismatch between {mri_path} {mri.shape} "
                f"and {pet_path} {pet.shape}"
            )
        if not np.allclose(mri_affine, pet_affine, atol=1e-3):
            raise ValueError(
                f"{subject_id}: {mri_path} and {pet_path} are not on the same voxel grid "
                "(affines differ)"
            )
        try:
            fused = fuse(method, mri, pet, **params)
        except ValueError as exc:
            raise ValueError(f"{subject_id} ({mri_path}, {pet_path}): {exc}") from exc
        path = save_nifti(fused, mri_affine, out_dir / f"{subject_id}_fused.nii.gz", np.float32)
        rows.append({"subject_id": subject_id, "fused_path": str(path)})
    if not rows:
        raise ValueError("items: nothing to fuse (empty list)")
    return pd.DataFrame(rows, columns=["subject_id", "fused_path"])
