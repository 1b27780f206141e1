"""Regional features of the probe: the mean of an image in each atlas region of the brain.

For one method the features of a subject are the means of its fused volume over each
Desikan-Killiany region (:mod:`fusion3d.probe.atlas`) inside the subject's brain mask, all
on the model grid: the volume the method produced, in the intensities it produced (the
model inputs are min-max scaled to [0, 1] per volume; fused images stay in the range
their method gives). The references use the same regions of the model-grid T1 and PET.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from fusion3d.io import load_nifti, write_tsv
from fusion3d.probe.atlas import Atlas, atlas_on_grid, load_atlas

log = logging.getLogger("fusion3d")


def regional_sums(
    volume: np.ndarray, labels: np.ndarray, region_ids: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ``volume`` and voxel count over each region id of ``labels`` (inside ``mask``).

    Returns ``(sums, counts)``, float64 and int64, in ``region_ids`` order; a region without a
    voxel (inside the mask) sums to 0 over 0 voxels.
    """
    if volume.shape != labels.shape or (mask is not None and mask.shape != volume.shape):
        raise ValueError(
            f"regional_sums: shapes differ: volume {volume.shape}, labels {labels.shape}"
            + ("" if mask is None else f", mask {mask.shape}")
        )
    lab = labels.astype(np.int64, copy=False)
    if mask is not None:
        lab = np.where(mask > 0, lab, 0)
    size = int(max(lab.max(initial=0), region_ids.max(initial=0))) + 1
    sums = np.bincount(lab.ravel(), weights=volume.ravel().astype(np.float64), minlength=size)
    counts = np.bincount(lab.ravel(), minlength=size)
    return sums[region_ids], counts[region_ids].astype(np.int64)


def regional_means(
    volume: np.ndarray, labels: np.ndarray, region_ids: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Mean of ``volume`` over each region id of ``labels`` (inside ``mask``), float64.

    A region without a voxel (inside the mask) gets NaN.
    """
    sums, counts = regional_sums(volume, labels, region_ids, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    means[counts == 0] = np.nan
    return means


def load_with_mask(
    volume_path: str | os.PathLike, mask_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A volume and its brain mask on the same grid: ``(volume, mask, affine)``.

    Raises ``ValueError`` naming both files when their shapes or affines differ (and, through
    :func:`fusion3d.io.load_nifti`, naming a file that is unreadable, not 3D or not finite).
    """
    volume, affine = load_nifti(volume_path)
    mask, mask_affine = load_nifti(mask_path)
    if mask.shape != volume.shape or not np.allclose(mask_affine, affine, atol=1e-4):
        raise ValueError(
            f"{volume_path}: shape {volume.shape} or affine differs from its brain mask "
            f"{mask_path} (shape {mask.shape})"
        )
    return volume, mask, affine


def feature_table(
    items: Iterable[tuple[str, str | os.PathLike, str | os.PathLike]],
    atlas: Atlas | None = None,
) -> pd.DataFrame:
    """Regional means of every ``(subject_id, volume_path, mask_path)``.

    Returns a frame indexed by ``subject_id`` (input order), one column per region
    (:attr:`Atlas.names`). The atlas is sampled once per distinct grid (shape and affine).
    Raises ``ValueError`` naming the file when a volume and its mask disagree in shape
    or affine.
    """
    atlas = atlas or load_atlas()
    grids: dict[tuple, np.ndarray] = {}
    rows, index = [], []
    for subject_id, volume_path, mask_path in items:
        volume, mask, affine = load_with_mask(volume_path, mask_path)
        key = (volume.shape, np.round(affine, 5).tobytes())
        if key not in grids:
            grids[key] = atlas_on_grid(atlas, volume.shape, affine)
        rows.append(regional_means(volume, grids[key], atlas.ids, mask))
        index.append(str(subject_id))
    frame = pd.DataFrame(
        np.vstack(rows) if rows else np.empty((0, len(atlas.ids))),
        index=pd.Index(index, name="subject_id"),
        columns=atlas.names,
    )
    empty = frame.columns[frame.isna().any()].tolist()
    if empty:
        log.info(
            "probe: %d region(s) without a voxel in some subject's brain: %s",
            len(empty),
            ", ".join(empty[:8]) + (" ..." if len(empty) > 8 else ""),
        )
    return frame


def gather_rows(tables: Iterable[pd.DataFrame], subjects: Iterable[str], what: str) -> pd.DataFrame:
    """One feature table from per-subject tables (e.g. the rows of rule ``probe_volumes``):
    the rows of ``subjects``, in that order.

    Raises
    ------
    ValueError
        Naming ``what`` and the subjects without a row, or a subject with two.
    """
    tables, subjects = list(tables), [str(s) for s in subjects]
    frame = pd.concat(tables) if tables else pd.DataFrame(index=pd.Index([], name="subject_id"))
    duplicated = frame.index[frame.index.duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{what}: subject(s) with two rows: {duplicated[:3]}")
    missing = [s for s in subjects if s not in frame.index]
    if missing:
        raise ValueError(f"{what}: no row for {len(missing)} subject(s), e.g. {missing[:3]}")
    return frame.loc[subjects]


def write_features(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a feature table (``subject_id`` first, then the regions; full precision)."""
    write_tsv(frame.reset_index(), path)


def read_features(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_features`, indexed by ``subject_id``."""
    frame = pd.read_csv(path, sep="\t", dtype={"subject_id": str})
    if "subject_id" not in frame.columns:
        raise ValueError(f"{path}: missing column 'subject_id'")
    if frame["subject_id"].duplicated().any():
        dup = frame.loc[frame["subject_id"].duplicated(), "subject_id"].iloc[0]
        raise ValueError(f"{path}: subject {dup!r} appears twice")
    return frame.set_index("subject_id")
