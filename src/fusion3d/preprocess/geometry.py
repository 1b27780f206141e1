"""Grid geometry: RAS reorientation, the MNI output grid and the paper's model-input geometry.

Every function here keeps track of the voxel-to-world affine so that the world
(RAS millimetre) position of anatomy is preserved by crop, pad and resize.
"""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
from scipy import ndimage


def reorient_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Return ``img`` reoriented to the closest RAS voxel order (world coordinates unchanged).

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D (or 4D with one volume) image in any orientation.

    Returns
    -------
    nibabel.Nifti1Image
        3D image whose voxel axes point (approximately) Right, Anterior, Superior.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    img3 = nib.Nifti1Image(data, img.affine)
    return nib.as_closest_canonical(img3)


def mni_grid(resolution_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of nilearn's MNI152 2009a template grid at ``resolution_mm``.

    Same first-voxel corner and field of view as the 1 mm template (197x233x189),
    voxel size ``resolution_mm`` (2 mm gives nilearn's own 99x117x95 grid).
    """
    from nilearn.datasets import load_mni152_template

    if not resolution_mm > 0:
        raise ValueError(f"mni_resolution_mm must be > 0, got {resolution_mm}")
    tpl = load_mni152_template(resolution=1)
    n = np.asarray(tpl.shape[:3])
    step = np.linalg.norm(tpl.affine[:3, :3], axis=0)
    shape = tuple(int(v) for v in np.floor((n - 1) * step / resolution_mm + 1e-6) + 1)
    affine = tpl.affine.copy()
    affine[:3, :3] = tpl.affine[:3, :3] / step * resolution_mm
    return shape, affine  # type: ignore[return-value]


def mni_template(resolution_mm: float, kind: str = "t1") -> nib.Nifti1Image:
    """nilearn's MNI152 2009a ``kind`` ("t1", "mask", "gm", "wm") on :func:`mni_grid`.

    Resampled once per process and cached; every call returns a fresh copy.
    """
    loaders = ("t1", "mask", "gm", "wm")
    if kind not in loaders:
        raise ValueError(f"kind must be one of {sorted(loaders)}, got {kind!r}")
    data, affine = _mni_template_cached(float(resolution_mm), kind)
    return nib.Nifti1Image(data.copy(), affine.copy())


@functools.lru_cache(maxsize=16)
def _mni_template_cached(resolution_mm: float, kind: str) -> tuple[np.ndarray, np.ndarray]:
    from nilearn import datasets
    from nilearn.image import resample_img

    loaders = {
        "t1": datasets.load_mni152_template,
        "mask": datasets.load_mni152_brain_mask,
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
    }
    shape, affine = mni_grid(resolution_mm)
    img = loaders[kind](resolution=1)
    out = resample_img(
        img,
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest" if kind == "mask" else "continuous",
        force_resample=True,
        copy_header=True,
    )
    data = np.asarray(out.dataobj, dtype=np.float32)
    data.setflags(write=False)
    return data, affine


def foreground_bbox(data: np.ndarray) -> tuple[slice, slice, slice]:
    """Tight bounding box (no margin) of ``data > 0``; the whole volume if nothing is > 0."""
    nz = np.nonzero(data > 0)
    if nz[0].size == 0:
        return tuple(slice(0, s) for s in data.shape)  # type: ignore[return-value]
    return tuple(slice(int(ax.min()), int(ax.max()) + 1) for ax in nz)  # type: ignore[return-value]


def crop(
    data: np.ndarray, affine: np.ndarray, bbox: tuple[slice, slice, slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``data`` to ``bbox``; the affine origin moves to the first kept voxel."""
    starts = np.array([s.start for s in bbox], dtype=float)
    shift = np.eye(4)
    shift[:3, 3] = starts
    return data[bbox].copy(), affine @ shift


def pad_to_cube(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric zero pad to a cube of side ``max(shape)`` (odd remainder goes after)."""
    side = max(data.shape)
    before = [(side - n) // 2 for n in data.shape]
    widths = [(b, side - n - b) for b, n in zip(before, data.shape, strict=True)]
    shift = np.eye(4)
    shift[:3, 3] = -np.asarray(before, dtype=float)
    return np.pad(data, widths, mode="constant"), affine @ shift


def resize(
    data: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int], order: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``data`` to ``shape`` over the same field of view (voxel-centre convention).

    Output voxel ``j`` samples input continuous index ``(j + 0.5) * f - 0.5`` with
    ``f = n_in / n_out`` per axis (``align_corners=False``), so the field of view
    (outer voxel edges) is kept and the affine scales the voxel size by ``f``.
    When downsampling with ``order >= 1`` a Gaussian of sigma ``(f - 1) / 2``
    voxels is applied first against aliasing (the scikit-image convention).

    Parameters
    ----------
    data : ndarray, 3D
    affine : (4, 4) ndarray
    shape : output shape
    order : spline order (0 = nearest for masks, 1 = trilinear)
    """
    f = np.asarray(data.shape, dtype=float) / np.asarray(shape, dtype=float)
    src = data.astype(np.float32, copy=False)
    if order > 0 and np.any(f > 1):
        sigma = np.maximum((f - 1.0) / 2.0, 0.0)
        src = ndimage.gaussian_filter(src, sigma=sigma, mode="constant")
    matrix = np.diag(f)
    offset = 0.5 * f - 0.5
    out = ndimage.affine_transform(
        src, matrix, offset=offset, output_shape=tuple(shape), order=order, mode="constant"
    )
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = offset
    return out, affine @ scale


def minmax(data: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the whole volume (a constant volume becomes zeros)."""
    lo, hi = float(np.min(data)), float(np.max(data))
    if hi - lo <= 0:
        return np.zeros_like(data, dtype=np.float32)
    return ((data - lo) / (hi - lo)).astype(np.float32)


def to_model_grid(
    mri: np.ndarray,
    pet: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    grid: int = 64,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Apply the paper's model-input geometry to co-registered MNI-space images.

    Crop all three to the foreground of ``mri > 0`` (no margin), pad
    symmetrically with zeros to a cube, resize to ``grid``^3 (trilinear for the
    images, nearest for the mask), and min-max scale ``mri`` and ``pet`` to [0, 1].

    Returns
    -------
    dict
        ``{"mri": (array, affine), "pet": (...), "mask": (...)}`` with float32
        images and a uint8 mask, each with its correct affine.
    """
    if not (mri.shape == pet.shape == mask.shape):
        raise ValueError(f"shape mismatch: mri {mri.shape}, pet {pet.shape}, mask {mask.shape}")
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    bbox = foreground_bbox(mri)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, arr, order in (("mri", mri, 1), ("pet", pet, 1), ("mask", mask, 0)):
        c, a = crop(arr, affine, bbox)
        c, a = pad_to_cube(c, a)
        r, a = resize(c, a, (grid, grid, grid), order=order)
        if name == "mask":
            out[name] = ((r > 0.5).astype(np.uint8), a)
        else:
            out[name] = (minmax(r), a)
    return out
