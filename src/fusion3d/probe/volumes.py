"""Regional grey-matter volumes of the probe: the atrophy that regional means cannot see.

The probe's regional means (:mod:`fusion3d.probe.features`) are means of min-max scaled
model-grid images: a region that loses tissue keeps much the same mean intensity, so they
barely see atrophy. These features measure it. The subject's MNI-space T1 (skull-stripped,
N4 bias-corrected, at ``preprocess.mni_resolution_mm``, written by the preprocess rule) is
segmented into CSF, grey matter (GM) and white matter by ANTs' Atropos inside its brain
mask (k-means initialisation, 3 classes, a light Markov random field; :func:`segment_tissues`),
and each Desikan-Killiany region's GM volume is the sum over its voxels of the GM
probability times the voxel's volume, in ml (:func:`regional_gm_volumes`).

The T1 reaches MNI space by the T1 -> MNI registration of the preprocessing, affine in the
default study, and the probability maps are not multiplied by the Jacobian of that
transform ("unmodulated"): a region's value is its GM volume after the brain was scaled
to the template's size, i.e. a head-size-normalised GM volume. Atrophy that the affine
transform does not undo (thinner cortex, larger ventricles) lowers it. With
``preprocess.t1_to_mni: syn`` the nonlinear warp matches most of each brain's shape to the
template and unmodulated volumes lose most of that signal (the rule's log says so).

Atropos runs with its random number generator on a constant seed (``-r 0``), so that a
rerun gives the same numbers (ANTs otherwise seeds it from the clock).
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import pandas as pd

from fusion3d.probe.atlas import Atlas, atlas_on_grid, load_atlas
from fusion3d.probe.features import load_with_mask, regional_sums

log = logging.getLogger("fusion3d")

#: Tissue classes of the segmentation, in the order of their mean T1 intensity.
TISSUES: tuple[str, ...] = ("csf", "gm", "wm")
#: Atropos settings: k-means initialisation with one class a tissue, MRF smoothing factor
#: 0.1 over the 26-neighbourhood, at most 5 EM iterations (ANTs' own defaults are 0.3 and 5).
ATROPOS_INIT = f"Kmeans[{len(TISSUES)}]"
ATROPOS_MRF = "[0.1,1x1x1]"
ATROPOS_CONVERGENCE = "[5,0]"


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel of a grid (voxel -> mm ``affine``) in ml."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def segment_tissues(t1: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """CSF, GM and WM posterior probabilities of a T1 inside its brain mask (Atropos).

    Parameters
    ----------
    t1 : 3D array
        The skull-stripped, bias-corrected T1 (any intensity scale).
    mask : 3D array
        The brain mask (> 0 inside), same shape.
    affine : (4, 4) array
        Voxel -> mm; only the voxel size is used.

    Returns
    -------
    float32 array, ``(3, *t1.shape)``
        The probabilities in :data:`TISSUES` order (classes sorted by their mean T1
        intensity inside the mask), 0 outside the mask.

    Raises
    ------
    ValueError
        When the shapes differ or the mask holds fewer voxels than classes.
    """
    import ants

    if t1.shape != mask.shape or t1.ndim != 3:
        raise ValueError(
            f"segment_tissues: 3D T1 and mask of one shape expected, got {t1.shape}, {mask.shape}"
        )
    inside = mask > 0
    if int(inside.sum()) < len(TISSUES):
        raise ValueError(f"segment_tissues: the brain mask holds {int(inside.sum())} voxel(s)")
    spacing = tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    image = ants.from_numpy(np.ascontiguousarray(t1, dtype=np.float32), spacing=spacing)
    mask_image = ants.from_numpy(inside.astype(np.float32), spacing=spacing)
    # ants.atropos writes its probability images beside tempfile.mktemp's name and leaves them
    # there (6 MB a subject): make that name point into a folder removed afterwards
    with tempfile.TemporaryDirectory(prefix="fusion3d_atropos_") as tmp:
        default, tempfile.tempdir = tempfile.tempdir, tmp
        try:
            result = ants.atropos(
                a=image,
                x=mask_image,
                i=ATROPOS_INIT,
                m=ATROPOS_MRF,
                c=ATROPOS_CONVERGENCE,
                r=0,  # constant seed: the same numbers on every run
                verbose=0,
            )
            probs = np.stack([p.numpy() for p in result["probabilityimages"]])
        finally:
            tempfile.tempdir = default
    probs = probs.astype(np.float32)
    if probs.shape[0] != len(TISSUES):
        raise RuntimeError(
            f"Atropos returned {probs.shape[0]} probability images, not {len(TISSUES)}"
        )
    probs *= inside
    weights = probs.reshape(len(TISSUES), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (probs.reshape(len(TISSUES), -1) @ t1.ravel().astype(np.float64)) / weights
    return probs[np.argsort(np.nan_to_num(means, nan=np.inf), kind="stable")]


def regional_gm_volumes(
    t1: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    labels: np.ndarray,
    region_ids: np.ndarray,
) -> np.ndarray:
    """GM volume (ml) of each region id of ``labels``: sum of GM probability x voxel volume.

    The GM probability is :func:`segment_tissues`'s, inside ``mask``; ``labels`` is a label
    image on the T1's grid. A region without a voxel in the mask has 0 ml.
    """
    gm = segment_tissues(t1, mask, affine)[TISSUES.index("gm")]
    sums, _ = regional_sums(gm, labels, region_ids, mask)
    return sums * voxel_volume_ml(affine)


def subject_gm_volumes(
    subject_id: str,
    t1_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    atlas: Atlas | None = None,
) -> pd.DataFrame:
    """Regional GM volumes (ml) of one subject's MNI-space T1, one row indexed by ``subject_id``.

    The columns are the atlas's regions (:attr:`Atlas.names`), as in the tables of
    :func:`fusion3d.probe.features.feature_table`. An empty brain mask gives a row of NaN
    (logged): such a subject was flagged by QC and has no tissue to measure.

    Raises
    ------
    ValueError
        Naming the files when the T1 and its mask are unreadable or differ in grid.
    """
    atlas = atlas or load_atlas()
    t1, mask, affine = load_with_mask(t1_path, mask_path)
    if not (mask > 0).any():
        log.warning("probe: %s: empty brain mask, no GM volumes (NaN)", mask_path)
        values = np.full(len(atlas.ids), np.nan)
    else:
        labels = atlas_on_grid(atlas, t1.shape, affine)
        values = regional_gm_volumes(t1, mask, affine, labels, atlas.ids)
    return pd.DataFrame(
        [values], index=pd.Index([str(subject_id)], name="subject_id"), columns=atlas.names
    )
