"""Fuse any image pair with any method, outside the workflow: ``fusion3d fuse``.

``fusion3d fuse --method M [--weights CKPT] MRI PET OUT``:

- ``M`` is a method key of :mod:`fusion3d.methods`: a classic fusion (``average``, ``pca``,
  ...; no weights) or a network (``swinfuse``, ``matr``, ``dilran``, ``dcfb2d``, ``dcfb3d``;
  ``--weights`` is a checkpoint that ``train`` wrote or ``fusion3d import-weights`` made,
  and it must be of that method's architecture);
- ``MRI`` and ``PET`` are NIfTI volumes of one shape (``OUT``: a NIfTI with the MRI's
  affine), or, for a 2D network, 8-bit grey PNG slices of one size (``OUT``: a PNG);
- intensities: a NIfTI already in [0, 1] (the workflow's model-grid images) is used as it
  is; any other is min-max scaled to [0, 1] (and said so). A PNG is read as 8-bit grey
  (colour converted with ITU-R 601-2 luma, as PIL's ``convert("L")``) and divided by 255.
  Each network then applies its own published input conventions inside its ``fuse``;
- the fused image is clipped to [0, 1]; a PNG output is ``round(255 * F)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fusion3d.methods import BY_NAME

__all__ = ["fuse_files", "read_png", "write_png"]

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    raise ValueError(f"{path}: not a NIfTI (.nii, .nii.gz) or PNG (.png) file")


def read_png(path: str | os.PathLike) -> np.ndarray:
    """An 8-bit grey slice in [0, 1] (float32, ``(H, W)``); ValueError names the file."""
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"), dtype=np.float32)
    except Exception as exc:  # PIL raises many types for broken files
        raise ValueError(f"{path}: cannot read as an image ({exc})") from exc
    return grey / 255.0


def write_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """``round(255 * clip(image, 0, 1))`` as an 8-bit grey PNG (written atomically)."""
    from PIL import Image

    from fusion3d.io import atomic_path

    data = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(data, mode="L").save(tmp, format="PNG")
    return Path(path)


def _unit_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI volume on [0, 1] (min-max scaled unless it already is) and its affine."""
    from fusion3d.io import load_nifti

    if not path.exists():
        raise FileNotFoundError(f"{path}: image not found")
    data, affine = load_nifti(path)
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0.0 and hi <= 1.0:
        return data, affine
    if hi <= lo:
        raise ValueError(f"{path}: a constant image ({lo:.4g}) cannot be fused")
    log.info("%s: intensities [%.4g, %.4g] min-max scaled to [0, 1]", path, lo, hi)
    return (data - lo) / (hi - lo), affine


def _load_network(method: str, weights: str | os.PathLike | None):
    from fusion3d.learned.inference import load_model

    if weights is None:
        raise ValueError(f"--method {method}: a network needs --weights (a checkpoint)")
    return load_model(weights, "cpu", method=method)


def _fuse_arrays(method: str, mri: np.ndarray, pet: np.ndarray, weights, params) -> np.ndarray:
    import torch

    from fusion3d.baselines import fuse as classic_fuse
    from fusion3d.learned.inference import fuse_tensor

    if BY_NAME[method].kind == "classic":
        if weights is not None:
            raise ValueError(f"--method {method}: a classic fusion takes no --weights")
        return classic_fuse(method, mri, pet, **(params or {}))
    model = _load_network(method, weights)
    divisor = int(getattr(model, "size_divisor", 1))
    plane = mri.shape[:2] if model.spatial_dims == 2 else mri.shape
    if any(s % divisor for s in plane):
        raise ValueError(
            f"--method {method}: image size {tuple(plane)} is not a multiple of the network's "
            f"size divisor {divisor}"
        )
    with torch.inference_mode():
        m, p = (
            torch.from_numpy(np.ascontiguousarray(mri)),
            torch.from_numpy(np.ascontiguousarray(pet)),
        )
        return fuse_tensor(model, m, p, amp="off").numpy()


def fuse_files(
    method: str,
    mri_path: str | os.PathLike,
    pet_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    params: dict | None = None,
) -> Path:
    """Fuse one MRI-PET pair with ``method`` and write ``out_path`` (see the module docstring).

    Raises
    ------
    FileNotFoundError
        A missing input or checkpoint.
    ValueError
        An unknown method, a checkpoint of another method, inputs of other shapes or kinds,
        a PNG with a 3D method, a size the network cannot take.
    """
    if method not in BY_NAME:
        raise ValueError(f"--method: unknown method {method!r}; one of {sorted(BY_NAME)}")
    mri_path, pet_path, out_path = Path(mri_path), Path(pet_path), Path(out_path)
    kinds = {_kind(mri_path), _kind(pet_path)}
    if len(kinds) > 1:
        raise ValueError(f"{mri_path} and {pet_path}: one is NIfTI, the other PNG")
    kind = kinds.pop()
    if _kind(out_path) != kind:
        raise ValueError(f"{out_path}: the output must be a {kind} file like the inputs")
    if kind == "png":
        if BY_NAME[method].dims != "2D":
            raise ValueError(
                f"--method {method}: a {BY_NAME[method].dims} method fuses volumes; PNG "
                "slices are for the 2D networks"
            )
        mri, pet = read_png(mri_path), read_png(pet_path)
        affine = None
    else:
        (mri, affine), (pet, _) = _unit_volume(mri_path), _unit_volume(pet_path)
    if mri.shape != pet.shape:
        raise ValueError(f"{mri_path} {mri.shape} and {pet_path} {pet.shape}: shapes differ")
    if kind == "png":  # one slice: a (H, W, 1) volume fused slice-wise along the last axis
        fused = _fuse_arrays(method, mri[..., None], pet[..., None], weights, params)[..., 0]
        return write_png(fused, out_path)
    from fusion3d.io import save_nifti

    fused = _fuse_arrays(method, mri, pet, weights, params)
    return save_nifti(np.clip(fused, 0.0, 1.0), affine, out_path, dtype=np.float32)
