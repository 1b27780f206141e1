"""Small synthetic T1/PET pairs with known truth, for tests and the benchmark fallback.

The anatomy is nilearn's MNI152 2009a template with an added head (CSF gap,
dark skull, bright scalp). The truth follows docs/architecture.md: the T1 at
world point x shows the template at ``A @ x``; the PET at world point y shows the
anatomy at T1 world ``B @ y``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from fusion3d.io import save_nifti


def _mni_volumes() -> tuple[dict[str, np.ndarray], np.ndarray]:
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    aff = t1.affine
    t1d = np.asarray(t1.dataobj, dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    dist = ndimage.distance_transform_edt(~mask)
    head = np.where(mask, t1d, 0.0)
    head = np.where((dist > 3) & (dist <= 8), 0.15, head)
    head = np.where((dist > 8) & (dist <= 13), 0.7, head)
    pet = 1.0 * gm + 0.3 * wm + np.where((dist > 8) & (dist <= 13), 0.08, 0.0)
    pet = ndimage.gaussian_filter(pet.astype(np.float32), sigma=6.0 / 2.355)
    return {"t1": head.astype(np.float32), "mask": mask.astype(np.float32), "pet": pet}, aff


def _sample(
    vol: np.ndarray, vol_affine: np.ndarray, world_to_vol: np.ndarray, shape, affine, order
):
    """Sample ``vol`` at ``world_to_vol @ affine @ ijk`` for every voxel of (shape, affine)."""
    m = np.linalg.inv(vol_affine) @ world_to_vol @ affine
    return ndimage.affine_transform(
        vol, m[:3, :3], offset=m[:3, 3], output_shape=tuple(shape), order=order, mode="constant"
    )


def _oblique_grid(voxel_mm: float, fov_mm: tuple[float, float, float], flip: bool):
    shape = tuple(int(round(f / voxel_mm)) for f in fov_mm)
    lin = np.diag([voxel_mm] * 3)
    if flip:  # LAS storage order, as many scanners write
        lin[0, 0] = -voxel_mm
    aff = np.eye(4)
    aff[:3, :3] = lin
    centre = np.array([(n - 1) / 2 for n in shape])
    aff[:3, 3] = -lin @ centre
    return shape, aff


def make_pair(
    out_dir: str | os.PathLike,
    *,
    t1_voxel_mm: float = 3.0,
    pet_voxel_mm: float = 4.0,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    noise_pet: bool = False,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``t1.nii.gz``, ``pet.nii.gz``, ``t1_brainmask.nii.gz`` and ``truth.json``.

    Parameters
    ----------
    out_dir : path
    t1_voxel_mm, pet_voxel_mm : voxel sizes of the T1 (LAS storage) and PET grids.
    a : (4, 4) T1 world -> MNI world (default: 5 deg rotation, 1.1 scale, shift).
    b : (4, 4) PET world -> T1 world rigid (default: 4 deg rotation, 5 mm shift).
    noise_pet : write pure noise as PET (a subject that must be flagged).
    seed : noise seed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if a is None:
        a = _rigid((5.0, -3.0, 4.0), (4.0, -6.0, 8.0)) @ np.diag([1.08, 1.05, 1.1, 1.0])
    if b is None:
        b = _rigid((4.0, 2.0, -3.0), (5.0, -3.0, 2.0))
    vols, mni_aff = _mni_volumes()
    t1_shape, t1_aff = _oblique_grid(t1_voxel_mm, (180.0, 216.0, 200.0), flip=True)
    pet_shape, pet_aff = _oblique_grid(pet_voxel_mm, (240.0, 240.0, 144.0), flip=False)
    t1 = _sample(vols["t1"], mni_aff, a, t1_shape, t1_aff, 1) * 1000.0
    mask = _sample(vols["mask"], mni_aff, a, t1_shape, t1_aff, 0) > 0.5
    rng = np.random.default_rng(seed)
    t1 = t1 + rng.normal(0, 10.0, t1.shape)
    if noise_pet:
        pet = rng.random(pet_shape) * 1000.0
    else:
        pet = _sample(vols["pet"], mni_aff, a @ b, pet_shape, pet_aff, 1) * 5000.0
    paths = {
        "t1": save_nifti(t1.astype(np.float32), t1_aff, out / "t1.nii.gz", dtype=np.float32),
        "pet": save_nifti(pet.astype(np.float32), pet_aff, out / "pet.nii.gz", dtype=np.float32),
        "mask": save_nifti(mask, t1_aff, out / "t1_brainmask.nii.gz", dtype=np.uint8),
    }
    truth = {"ptid": "000_S_0000", "t1_to_mni_affine": a.tolist(), "pet_to_t1_affine": b.tolist()}
    (out / "truth.json").write_text(json.dumps(truth))
    paths["truth"] = out / "truth.json"
    return paths


def _rigid(
    angles_deg: tuple[float, float, float], shift_mm: tuple[float, float, float]
) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = shift_mm
    return m
