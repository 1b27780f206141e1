"""Training data for DC2Fusion: load model-grid volume pairs, augment, sample 2D slices.

Items are ``(subject_id, mri_path, pet_path)`` NIfTI volumes already on the model grid
(a cube, values in [0, 1]). All randomness comes from an explicit ``torch.Generator``
so that training is reproducible and resumable epoch by epoch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fusion3d.io import load_nifti

__all__ = [
    "AugmentConfig",
    "VolumePair",
    "augment_pair",
    "foreground_slices",
    "load_items",
    "random_rotation_matrix",
]

Item = tuple[str, str | os.PathLike, str | os.PathLike]


@dataclass(frozen=True)
class VolumePair:
    """One subject's co-registered images on the model grid.

    Attributes
    ----------
    subject_id : str
    mri, pet : np.ndarray
        ``(D, H, W)`` float32 in [0, 1].
    affine : np.ndarray
        The MRI's 4x4 affine.
    """

    subject_id: str
    mri: np.ndarray
    pet: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class AugmentConfig:
    """The paper's augmentations (defaults = paper values).

    Rotation about each axis by U(-rot_range, rot_range) rad with probability
    ``rot_prob`` per axis (both modalities); MRI only: gamma contrast with gamma in
    ``gamma_range`` (p ``gamma_prob``), additive Gaussian noise N(noise_mean, noise_std)
    (p ``noise_prob``).
    """

    rot_range: float = 0.2
    rot_prob: float = 0.1
    gamma_range: tuple[float, float] = (0.1, 2.0)
    gamma_prob: float = 0.5
    noise_mean: float = 0.5
    noise_std: float = 0.1
    noise_prob: float = 0.5


def load_items(items: Sequence[Item], *, what: str = "items") -> list[VolumePair]:
    """Load and check every pair.

    Raises
    ------
    ValueError
        On a malformed item, a non-cubic volume, MRI/PET shape mismatch or differing
        grids between subjects (naming the file).
    FileNotFoundError
        When an image is missing.
    """
    if len(items) == 0:
        raise ValueError(f"{what}: empty list of (subject_id, mri_path, pet_path)")
    pairs: list[VolumePair] = []
    shape0 = None
    for item in items:
        pair = load_item(item, what=what)
        mri_path = item[1]
        if len(set(pair.mri.shape)) != 1:
            raise ValueError(f"{mri_path}: model-grid image must be a cube, got {pair.mri.shape}")
        if shape0 is None:
            shape0 = pair.mri.shape
        elif pair.mri.shape != shape0:
            raise ValueError(
                f"{mri_path}: shape {pair.mri.shape} differs from the first item {shape0}"
            )
        pairs.append(pair)
    return pairs


def load_item(item: Item, *, what: str = "items") -> VolumePair:
    """Load one ``(subject_id, mri_path, pet_path)`` item, checking MRI and PET share a shape."""
    if len(item) != 3:
        raise ValueError(f"{what}: expected (subject_id, mri_path, pet_path), got {item!r}")
    sid, mri_path, pet_path = item
    mri, affine = load_nifti(mri_path)
    pet, _ = load_nifti(pet_path)
    if mri.shape != pet.shape:
        raise ValueError(f"{pet_path}: PET shape {pet.shape} differs from MRI {mri.shape}")
    return VolumePair(str(sid), mri, pet, affine)


def random_rotation_matrix(
    spatial_dims: int, gen: torch.Generator, rot_range: float, rot_prob: float
) -> Tensor | None:
    """Draw the paper's random rotation.

    Returns
    -------
    Tensor or None
        ``(nd, nd)`` rotation acting on normalised (x, y[, z]) coordinates, or ``None``
        when no axis was picked. In 2D only the in-plane rotation exists.
    """
    n_axes = 3 if spatial_dims == 3 else 1
    draws = torch.rand(n_axes, generator=gen)
    angles = (torch.rand(n_axes, generator=gen) * 2 - 1) * rot_range
    angles = torch.where(draws < rot_prob, angles, torch.zeros_like(angles))
    if not bool((angles != 0).any()):
        return None
    if spatial_dims == 2:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return torch.tensor([[c, -s], [s, c]], dtype=torch.float32)
    rot = torch.eye(3)
    for axis in range(3):
        c, s = math.cos(angles[axis]), math.sin(angles[axis])
        i, j = [a for a in range(3) if a != axis]
        r = torch.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = r @ rot
    return rot


def augment_pair(
    mri: Tensor, pet: Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()
) -> tuple[Tensor, Tensor]:
    """Augment one batch of pairs in place of the originals (new tensors returned).

    Parameters
    ----------
    mri, pet : Tensor
        ``(B, 1, *S)``; the same rotation is applied to both, intensity changes to MRI only.
    gen : torch.Generator
        The only source of randomness.
    cfg : AugmentConfig

    Returns
    -------
    tuple of Tensor
        ``(mri, pet)``, ``(B, 1, *S)``.
    """
    nd = mri.ndim - 2
    b = mri.shape[0]
    outs_m, outs_p = [], []
    for i in range(b):
        m, p = mri[i : i + 1], pet[i : i + 1]  # (1, 1, *S)
        rot = random_rotation_matrix(nd, gen, cfg.rot_range, cfg.rot_prob)
        if rot is not None:
            theta = torch.cat([rot, torch.zeros(nd, 1)], dim=1)[None].to(m)  # (1, nd, nd+1)
            grid = F.affine_grid(theta, list(m.shape), align_corners=True)  # (1, *S, nd)
            both = torch.cat([m, p], dim=1)  # (1, 2, *S)
            both = F.grid_sample(
                both, grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )
            m, p = both[:, :1], both[:, 1:]
        if float(torch.rand(1, generator=gen)) < cfg.gamma_prob:
            lo, hi = cfg.gamma_range
            gamma = lo + float(torch.rand(1, generator=gen)) * (hi - lo)
            mn, mx = m.min(), m.max()
            rng = (mx - mn).clamp_min(1e-7)
            m = ((m - mn) / rng).clamp_min(0).pow(gamma) * rng + mn
        if float(torch.rand(1, generator=gen)) < cfg.noise_prob:
            noise = torch.randn(m.shape, generator=gen) * cfg.noise_std + cfg.noise_mean
            m = m + noise.to(m)
        outs_m.append(m)
        outs_p.append(p)
    return torch.cat(outs_m), torch.cat(outs_p)


def foreground_slices(mri: np.ndarray) -> np.ndarray:
    """Indices along the LAST axis whose MRI slice has any voxel > 0.

    Raises ``ValueError`` when the MRI is empty.
    """
    idx = np.flatnonzero((mri > 0).reshape(-1, mri.shape[-1]).any(axis=0))
    if idx.size == 0:
        raise ValueError("MRI volume has no foreground (no voxel > 0)")
    return idx
