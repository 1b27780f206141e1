"""SUVR normalisation with the shipped MNI-space reference regions (pons, cerebellum)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage, stats

REGIONS = ("pons", "cerebellum")
#: erosion applied at use, in mm (Clinica erodes the pons by 6 mm)
EROSION_MM = {"pons": 6.0, "cerebellum": 0.0}


def reference_region_path(region: str) -> Path:
    """Path of the shipped 1 mm MNI152 2009a mask of ``region`` ("pons" or "cerebellum")."""
    if region not in REGIONS:
        raise ValueError(f"suvr_region must be one of {REGIONS}, got {region!r}")
    path = (
        resources.files("fusion3d")
        / "data"
        / f"tpl-MNI152NLin2009a_res-1_desc-{region}_mask.nii.gz"
    )
    path = Path(str(path))
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: reference region missing; run src/fusion3d/data/make_reference_regions.py"
        )
    return path


def reference_region(
    region: str, shape: tuple[int, int, int], affine: np.ndarray, erode_mm: float | None = None
) -> np.ndarray:
    """Reference-region mask (bool) resampled (nearest) onto the grid ``shape``/``affine``.

    The mask is eroded by ``erode_mm`` (default :data:`EROSION_MM`) on the target grid
    using a Euclidean distance transform in millimetres.
    """
    from nilearn.image import resample_img

    img = nib.load(str(reference_region_path(region)))
    res = resample_img(
        img,
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    mask = np.asarray(res.dataobj) > 0
    erode = EROSION_MM[region] if erode_mm is None else erode_mm
    if erode > 0 and mask.any():
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        dist = ndimage.distance_transform_edt(mask, sampling=spacing)
        mask = dist > erode
    return mask


def trimmed_mean(values: np.ndarray, trim: float = 0.1) -> float:
    """Mean after cutting ``trim`` of the values from each tail (scipy ``trim_mean``)."""
    if values.size == 0:
        return float("nan")
    return float(stats.trim_mean(values, proportiontocut=trim))


def suvr(pet: np.ndarray, ref_mask: np.ndarray, trim: float = 0.1) -> tuple[np.ndarray, float, int]:
    """Divide ``pet`` by its trimmed mean inside ``ref_mask``.

    Returns
    -------
    (suvr image float32, reference value, number of reference voxels). When the
    reference value is not > 0 the image is returned unscaled (the caller flags it).
    """
    if pet.shape != ref_mask.shape:
        raise ValueError(f"shape mismatch: pet {pet.shape}, reference mask {ref_mask.shape}")
    vals = pet[ref_mask > 0]
    ref = trimmed_mean(vals, trim)
    if not np.isfinite(ref) or ref <= 0:
        return pet.astype(np.float32), ref, int(vals.size)
    return (pet / ref).astype(np.float32), ref, int(vals.size)
