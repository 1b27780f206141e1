"""Accuracy of preprocessing against synthetic ground truth (benchmarks and tests only).

Truth conventions (docs/architecture.md): matrices act on RAS world mm of the
ingested images; ``A`` maps T1 world to MNI world, ``B`` maps PET world to T1 world.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from fusion3d.io import load_nifti
from fusion3d.preprocess.outputs import output_paths
from fusion3d.preprocess.registration import ants_affine_to_ras


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty)."""
    a, b = a > 0, b > 0
    den = a.sum() + b.sum()
    return 1.0 if den == 0 else float(2.0 * (a & b).sum() / den)


def mean_displacement(m1: np.ndarray, m2: np.ndarray, points: np.ndarray) -> float:
    """Mean Euclidean distance (mm) between ``m1 @ p`` and ``m2 @ p`` over points (N, 3)."""
    if points.size == 0:
        return float("nan")
    h = np.c_[points, np.ones(len(points))]
    return float(np.linalg.norm((h @ m1.T - h @ m2.T)[:, :3], axis=1).mean())


def _voxel_world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask > 0).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _truth_dir(truth_dir: str | os.PathLike) -> Path:
    d = Path(truth_dir)
    if not (d / "truth.json").exists():
        raise FileNotFoundError(f"{d / 'truth.json'}: truth file not found")
    return d


def accuracy_against_truth(
    out_dir: str | os.PathLike, subject_id: str, truth_dir: str | os.PathLike
) -> dict:
    """Compare one subject's preprocessing outputs in ``out_dir`` with its synthetic truth.

    ``out_dir`` and ``subject_id`` are as given to
    :func:`~fusion3d.preprocess.preprocess_pair`; the result is that of
    :func:`accuracy_from_files` with ``subject_id`` first.
    """
    files = output_paths(out_dir, subject_id)
    return {"subject_id": subject_id, **accuracy_from_files(files, truth_dir)}


def accuracy_from_files(
    files: Mapping[str, str | os.PathLike], truth_dir: str | os.PathLike
) -> dict:
    """Compare one subject's preprocessing outputs with its synthetic truth.

    Parameters
    ----------
    files : mapping
        The subject's ``mask_mni``, ``xfm_t1_mni`` and ``xfm_pet_t1`` outputs (keys of
        :data:`fusion3d.preprocess.outputs.SUFFIXES`).
    truth_dir : path
        ``<root>/synthetic/truth/<PTID>/`` holding ``truth.json`` and ``t1_brainmask.nii.gz``.

    Returns
    -------
    dict
        ``dice`` (our MNI mask brought to the T1 grid through the inverse of our
        T1->MNI affine, nearest neighbour, vs the true mask), ``pet_to_t1_error_mm``
        (mean |B_est y - B y| over true-brain points y = B^-1 x), and
        ``t1_to_mni_error_mm`` (mean |A_est x - A x| over true-brain points x).
    """
    from scipy import ndimage

    tdir = _truth_dir(truth_dir)
    truth = json.loads((tdir / "truth.json").read_text())
    for key in ("t1_to_mni_affine", "pet_to_t1_affine"):
        if key not in truth:
            raise ValueError(f"{tdir / 'truth.json'}: missing key {key!r}")
    a_true = np.asarray(truth["t1_to_mni_affine"], dtype=float)
    b_true = np.asarray(truth["pet_to_t1_affine"], dtype=float)
    true_mask, t1_affine = load_nifti(tdir / "t1_brainmask.nii.gz")
    pts = _voxel_world(true_mask, t1_affine)

    missing = [k for k in ("mask_mni", "xfm_t1_mni", "xfm_pet_t1") if k not in files]
    if missing:
        raise ValueError(f"accuracy_from_files: missing preprocessing output(s) {missing}")
    paths = {key: Path(path) for key, path in files.items()}
    # ANTs fixed->moving: T1->MNI registration had fixed=MNI, moving=T1.
    a_est = ants_affine_to_ras(paths["xfm_t1_mni"], direction="moving_to_fixed")
    b_est = ants_affine_to_ras(paths["xfm_pet_t1"], direction="moving_to_fixed")

    # Our MNI mask pulled back to the T1 grid: T1 voxel -> world -> MNI (our A) -> MNI voxel.
    mni_img = nib.load(str(paths["mask_mni"]))
    mni_mask = np.asarray(mni_img.dataobj) > 0
    vox = np.linalg.inv(mni_img.affine) @ a_est @ t1_affine
    ours = ndimage.affine_transform(
        mni_mask.astype(np.uint8),
        vox[:3, :3],
        offset=vox[:3, 3],
        output_shape=true_mask.shape,
        order=0,
        mode="constant",
    )
    pet_pts = (np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(b_true).T)[:, :3]
    return {
        "dice": dice(ours, true_mask),
        "pet_to_t1_error_mm": mean_displacement(b_est, b_true, pet_pts),
        "t1_to_mni_error_mm": mean_displacement(a_est, a_true, pts),
    }
