"""Training data of the networks: model-grid volume pairs, augmentation, 2D slice sampling.

Items are ``(subject_id, mri_path, pet_path)`` NIfTI volumes already on the model grid
(a cube, values in [0, 1]). All randomness comes from an explicit ``torch.Generator``
so that training is reproducible and resumable epoch by epoch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fusion3d.io import load_nifti
from fusion3d.learned.settings import ROTATION_INTERVALS

__all__ = [
    "ROTATION_INTERVALS",
    "AugmentConfig",
    "VolumePair",
    "adjust_contrast",
    "augment_mri_intensity",
    "augment_pair",
    "draw_rotations",
    "foreground_slices",
    "load_item",
    "rescale_unit",
    "rotate",
    "rotation_matrix",
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
    """The published augmentations (``train_diff.py`` of DC2Fusion; defaults = its values).

    Applied per training image, in the published order:

    1. rotation about the x, then y, then z array axis (MONAI's ``RandRotated`` naming),
       each with probability ``rot_prob``, both modalities, bilinear, border padding
       (in 2D only the in-plane rotation, ``z``); the angle is drawn by
       ``rot_interval``: ``"symmetric"`` U(-rot_range, rot_range) (ours) or
       ``"published"`` exactly +rot_range (MONAI reads the published
       ``range_x=[0.2, 0.2]`` as the interval [0.2, 0.2]);
    2. MRI only, with probability ``gamma_prob``: gamma contrast,
       ``x = ((x - min) / (range + 1e-7)) ** gamma * range + min``, gamma ~ U(gamma_range);
    3. MRI only, with probability ``noise_prob``: additive Gaussian noise
       N(noise_mean, sigma) with sigma ~ U(0, noise_std) (see :func:`augment_pair`);
    4. both images min-max rescaled to [0, 1] (``ScaleIntensityd``; a constant image -> 0).
    """

    rot_range: float = 0.2
    rot_prob: float = 0.1
    rot_interval: str = "symmetric"
    gamma_range: tuple[float, float] = (0.1, 2.0)
    gamma_prob: float = 0.5
    noise_mean: float = 0.5
    noise_std: float = 0.1
    noise_prob: float = 0.5

    def __post_init__(self) -> None:
        """Check ``rot_interval``."""
        if self.rot_interval not in ROTATION_INTERVALS:
            raise ValueError(
                f"AugmentConfig.rot_interval must be one of {ROTATION_INTERVALS}, "
                f"got {self.rot_interval!r}"
            )


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


ROTATION_AXES = {3: ("x", "y", "z"), 2: ("z",)}


def rotation_matrix(spatial_dims: int, axis: str, angle: float) -> Tensor:
    """MONAI's rotation about one axis (``monai.transforms.utils.create_rotate``).

    ``x`` turns the plane of array axes 1 and 2, ``y`` that of axes 0 and 2, ``z`` that of
    axes 0 and 1 (in 2D the only rotation). The matrix maps an output voxel's offset from
    the image centre to the input offset it samples, in array-axis order.
    """
    c, s = math.cos(angle), math.sin(angle)
    if spatial_dims == 2:
        if axis != "z":
            raise ValueError(f"2D images rotate about 'z' only, got axis {axis!r}")
        return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    rot = torch.eye(3, dtype=torch.float64)
    i, j, sign = {"x": (1, 2, 1.0), "y": (0, 2, -1.0), "z": (0, 1, 1.0)}[axis]
    rot[i, i], rot[j, j] = c, c
    rot[i, j], rot[j, i] = -sign * s, sign * s
    return rot


def draw_rotations(
    spatial_dims: int, gen: torch.Generator, cfg: AugmentConfig
) -> list[tuple[str, float]]:
    """Draw the random rotations of one image: ``[(axis, angle), ...]`` in the order applied.

    Each axis of :data:`ROTATION_AXES` rotates with probability ``cfg.rot_prob``; its angle
    is U(-rot_range, rot_range) (``rot_interval="symmetric"``) or exactly ``+rot_range``
    (``"published"``). An angle is drawn only for an axis that rotates.
    """
    out = []
    for axis in ROTATION_AXES[spatial_dims]:
        if float(torch.rand(1, generator=gen)) < cfg.rot_prob:
            if cfg.rot_interval == "published":
                angle = cfg.rot_range
            else:
                angle = (2 * float(torch.rand(1, generator=gen)) - 1) * cfg.rot_range
            out.append((axis, angle))
    return out


def rotate(images: Tensor, rot: Tensor) -> Tensor:
    """Rotate ``(1, C, *S)`` about the image centre as MONAI's ``Rotate`` does.

    The output voxel ``v`` takes the input at ``c + rot @ (v - c)`` with ``c = (S - 1) / 2``
    (voxel units, array-axis order), bilinear interpolation, border padding, the same
    size as the input.
    """
    nd = images.ndim - 2
    half = torch.diag(torch.tensor(images.shape[2:], dtype=torch.float64) / 2)
    # grid_sample's normalised coordinates (align_corners=False): offset = u * S / 2
    norm = torch.linalg.inv(half) @ rot @ half
    theta = norm.flip(0).flip(1)  # affine_grid orders coordinates (x, y[, z]) = last axis first
    theta = torch.cat([theta, torch.zeros(nd, 1, dtype=theta.dtype)], dim=1)[None]
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def adjust_contrast(image: Tensor, gamma: float) -> Tensor:
    """MONAI's ``AdjustContrast``: ``((x - min) / (range + 1e-7)) ** gamma * range + min``."""
    mn = image.min()
    rng = image.max() - mn
    return ((image - mn) / (rng + 1e-7)) ** gamma * rng + mn


def rescale_unit(image: Tensor) -> Tensor:
    """Min-max rescale to [0, 1] (MONAI's ``ScaleIntensity``); a constant image becomes 0."""
    mn, mx = image.min(), image.max()
    if bool(mx == mn):
        return torch.zeros_like(image)
    return (image - mn) / (mx - mn)


def augment_mri_intensity(mri: Tensor, gen: torch.Generator, cfg: AugmentConfig) -> Tensor:
    """The MRI-only steps of the published augmentation, before the final rescale.

    With probability ``cfg.gamma_prob`` the gamma contrast (:func:`adjust_contrast`,
    gamma ~ U(``gamma_range``)); then with probability ``cfg.noise_prob`` additive noise
    N(``noise_mean``, sigma) with sigma ~ U(0, ``noise_std``) drawn per image.
    """
    if float(torch.rand(1, generator=gen)) < cfg.gamma_prob:
        lo, hi = cfg.gamma_range
        mri = adjust_contrast(mri, lo + float(torch.rand(1, generator=gen)) * (hi - lo))
    if float(torch.rand(1, generator=gen)) < cfg.noise_prob:
        # sigma ~ U(0, noise_std): what MONAI's RandGaussianNoise has always done (its
        # sample_std argument, added in 2024, defaults to True), so the published run did it
        sigma = float(torch.rand(1, generator=gen)) * cfg.noise_std
        noise = torch.randn(mri.shape, generator=gen) * sigma + cfg.noise_mean
        mri = mri + noise.to(mri)
    return mri


def augment_pair(
    mri: Tensor, pet: Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()
) -> tuple[Tensor, Tensor]:
    """Augment a batch of pairs as the published training pipeline does (new tensors).

    Per pair, in this order (see :class:`AugmentConfig`): the random rotations (both
    images, one resampling per rotation, as the three published ``RandRotated``), the
    MRI's gamma contrast and Gaussian noise, then the min-max rescale of both images to
    [0, 1], so every augmented image spans exactly [0, 1] (unless constant).

    The noise's standard deviation is drawn from U(0, ``noise_std``) for every noisy
    image: MONAI's ``RandGaussianNoise`` has always drawn it so (its ``sample_std``
    argument, added in 2024, defaults to ``True`` for backward compatibility), so it is
    what the published run did with any MONAI version.

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
    outs_m, outs_p = [], []
    for i in range(mri.shape[0]):
        m, p = mri[i : i + 1], pet[i : i + 1]  # (1, 1, *S)
        rotations = draw_rotations(nd, gen, cfg)
        if rotations:
            both = torch.cat([m, p], dim=1)  # (1, 2, *S)
            for axis, angle in rotations:
                both = rotate(both, rotation_matrix(nd, axis, angle))
            m, p = both[:, :1], both[:, 1:]
        m = augment_mri_intensity(m, gen, cfg)
        outs_m.append(rescale_unit(m))
        outs_p.append(rescale_unit(p))
    return torch.cat(outs_m), torch.cat(outs_p)


def foreground_slices(mri: np.ndarray) -> np.ndarray:
    """Indices along the LAST axis whose MRI slice has any voxel > 0.

    Raises ``ValueError`` when the MRI is empty.
    """
    idx = np.flatnonzero((mri > 0).reshape(-1, mri.shape[-1]).any(axis=0))
    if idx.size == 0:
        raise ValueError("MRI volume has no foreground (no voxel > 0)")
    return idx
