"""ANTsPy glue: nibabel <-> ANTs images, registration, and ANTs transform <-> RAS matrices.

ANTs conventions (the source of most bugs, so they are spelled out):
ANTs images and transforms live in LPS physical millimetres, while NIfTI affines
are RAS. An ANTs affine ``.mat`` written by ``ants.registration(fixed, moving)``
maps points of the FIXED space to points of the MOVING space:
``y = M (x - c) + c + t`` (``c`` the fixed parameters, ``M``/``t`` the parameters).
:func:`ants_affine_to_ras` turns that into a 4x4 RAS matrix in either direction.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from fusion3d.io import atomic_path

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def configure_threads(threads: int) -> None:
    """Set ITK and torch thread counts.

    ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` when its global thread
    pool is first created, so call this before the first ANTs call of the
    process (the workflow runs one subject per process).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def nib_to_ants(img: nib.Nifti1Image):
    """Convert a 3D nibabel image (any orientation) to an ANTsImage with the same world."""
    import ants

    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    lps = _LPS @ img.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(
        data,
        origin=tuple(float(v) for v in lps[:3, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
    )


def ants_to_nib(image) -> nib.Nifti1Image:
    """Convert an ANTsImage to a nibabel image (RAS affine)."""
    direction = np.asarray(image.direction, dtype=float)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.spacing, dtype=float)
    lps[:3, 3] = np.asarray(image.origin, dtype=float)
    return nib.Nifti1Image(image.numpy().astype(np.float32), _LPS @ lps)


def ants_affine_to_ras(transform, direction: str = "fixed_to_moving") -> np.ndarray:
    """Convert an ANTs affine transform (object or ``.mat`` path) to a 4x4 RAS matrix.

    Parameters
    ----------
    transform : ants.ANTsTransform or path
        An affine-family ANTs transform (``AffineTransform``, ``Euler3DTransform``...).
    direction : {"fixed_to_moving", "moving_to_fixed"}
        ``fixed_to_moving`` is ANTs' own sense (a fixed-space point to the moving
        space point it samples); ``moving_to_fixed`` is its inverse, i.e. the
        matrix that carries moving-image anatomy onto the fixed image.

    Returns
    -------
    (4, 4) ndarray acting on RAS world millimetres.
    """
    import ants

    if isinstance(transform, (str, os.PathLike)):
        if not Path(transform).exists():
            raise FileNotFoundError(f"{transform}: transform file not found")
        transform = ants.read_transform(str(transform))
    params = np.asarray(transform.parameters, dtype=float)
    center = np.asarray(transform.fixed_parameters, dtype=float)
    if params.size != 12 or center.size != 3:
        raise ValueError(
            f"not a 3D affine transform (parameters {params.size}, fixed {center.size})"
        )
    m = params[:9].reshape(3, 3)
    t = params[9:]
    lps = np.eye(4)
    lps[:3, :3] = m
    lps[:3, 3] = t + center - m @ center
    ras = _LPS @ lps @ _LPS
    if direction == "fixed_to_moving":
        return ras
    if direction == "moving_to_fixed":
        return np.linalg.inv(ras)
    raise ValueError(f"direction must be 'fixed_to_moving' or 'moving_to_fixed', got {direction!r}")


def ras_to_ants_affine(matrix: np.ndarray):
    """Build an ANTs ``AffineTransform`` (fixed -> moving sense) from a 4x4 RAS matrix."""
    import ants

    lps = _LPS @ np.asarray(matrix, dtype=float) @ _LPS
    tx = ants.create_ants_transform(
        transform_type="AffineTransform", precision="float", dimension=3
    )
    tx.set_parameters(np.concatenate([lps[:3, :3].ravel(), lps[:3, 3]]))
    tx.set_fixed_parameters(np.zeros(3))
    return tx


def copy_transform(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy an ANTs transform file to ``dst`` atomically."""
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def resample_to_resolution(image, resolution_mm: float):
    """Resample an ANTsImage to isotropic ``resolution_mm`` (linear)."""
    import ants

    return ants.resample_image(image, (resolution_mm,) * 3, use_voxels=False, interp_type=0)


def register(
    fixed,
    moving,
    transform: str,
    *,
    mask=None,
    initial_transform: str | None = None,
    outprefix: str,
    fast: bool = True,
) -> dict:
    """Run ``ants.registration`` and return its result dict.

    ``transform`` is an ANTsPy ``type_of_transform`` ("Rigid", "Affine", "SyN"...).
    Mattes mutual information throughout; ``fast`` uses a shorter affine schedule
    adapted to images already at ~2 mm.
    """
    import ants

    kwargs: dict = {}
    if fast:
        kwargs.update(
            aff_iterations=(500, 250, 100),
            aff_shrink_factors=(4, 2, 1),
            aff_smoothing_sigmas=(2, 1, 0),
            aff_random_sampling_rate=0.3,
        )
    if mask is not None:
        kwargs["mask"] = mask
    if initial_transform is not None:
        kwargs["initial_transform"] = initial_transform
    return ants.registration(
        fixed=fixed, moving=moving, type_of_transform=transform, outprefix=outprefix, **kwargs
    )


def mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray, bins: int = 32) -> float:
    """Mutual information (nats) of ``a`` and ``b`` inside ``mask`` (joint histogram)."""
    m = mask > 0
    if m.sum() < 10:
        return 0.0
    x, y = a[m].astype(np.float64), b[m].astype(np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    hist, _, _ = np.histogram2d(x, y, bins=bins)
    pxy = hist / hist.sum()
    px, py = pxy.sum(1, keepdims=True), pxy.sum(0, keepdims=True)
    nz = pxy > 0
    return float((pxy[nz] * np.log(pxy[nz] / (px @ py)[nz])).sum())


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` inside ``mask`` (0 when undefined)."""
    m = mask > 0
    if m.sum() < 10:
        return 0.0
    x, y = a[m].astype(np.float64), b[m].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0
