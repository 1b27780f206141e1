"""Fuse any image pair with any method, outside the workflow: ``fusion3d fuse``.

``fusion3d fuse --method M [--weights CKPT] MRI PET OUT``:

- ``M`` is a method key of :mod:`fusion3d.methods`: a classic fusion (``average``, ``pca``,
  ...; no weights) or a network (``swinfuse``, ``matr``, ``dilran``, ``dcfb2d``, ``dcfb3d``;
  ``--weights`` is a checkpoint that ``train`` wrote or ``fusion3d import-weights`` made,
  and it must be of that method's architecture. A state_dict saved by a published code is
  refused, not converted in memory: the message names the network and prints the
  ``fusion3d import-weights`` command that converts it once, so that the converted sizes
  are checked and written down);
- ``MRI`` and ``PET`` are NIfTI volumes of one shape (``OUT``: a NIfTI with the MRI's
  affine), or, for a 2D network, 8-bit grey PNG slices of one size (``OUT``: a PNG);
- intensities: a NIfTI already in [0, 1] (the workflow's model-grid images) is used as it
  is; any other is min-max scaled to [0, 1] (and said so). A PNG is read as 8-bit grey
  (colour converted with ITU-R 601-2 luma, as PIL's ``convert("L")``) and divided by 255.
  Each network then applies its own published input conventions inside its ``fuse``;
- ``--set KEY=VALUE``: a classic method's parameter, or a network's inference-time key
  (its ``inference_keys``: e.g. MATR's ``allow_non_square``, DILRAN's ``inference_norm``,
  SwinFuse's ``fusion_type``); every key is checked, and a size or trained switch of the
  checkpoint is refused with the reason;
- a NIfTI output is the fused image clipped to [0, 1]. A PNG output is written as the
  method's published test script writes its 8-bit images (:data:`PNG_RULES`), or with
  ``clamp_round`` as ``round(255 clip(F, 0, 1))`` for every method:

  ============  =====================  ==================================================
  method        rule                   8-bit value of the float output ``F``
  ============  =====================  ==================================================
  ``matr``      ``truncate-wrap``      ``(F * 255).astype(np.uint8)`` (``Test.py:67-68``):
                                       truncated toward zero, wrapped modulo 256 (as numpy
                                       casts on x86-64: -0.01 -> 254), not clipped
  ``dilran``    ``clamp-truncate``     ``(clamp(F, 0, 1) * 255).astype(np.uint8)``
                                       (``inference.py``: the clamp, then its io.imsave)
  ``swinfuse``  ``clamp-truncate``     ``save_image_test`` (``utils.py:639-653``): the
                                       network's ``fuse`` already stretched and floored
                                       ``F`` to ``k / 255``; the writer truncates
  ``dcfb2d``    ``clamp-round``        no published 2D writer (DC2Fusion writes NIfTI)
  ============  =====================  ==================================================
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fusion3d.methods import BY_NAME

__all__ = ["PNG_RULES", "describe_methods", "fuse_files", "read_png", "to_uint8", "write_png"]

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: The 8-bit rule of each 2D network's published test script (module docstring).
PNG_RULES: dict[str, str] = {
    "matr": "truncate-wrap",
    "dilran": "clamp-truncate",
    "swinfuse": "clamp-truncate",
    "dcfb2d": "clamp-round",
}


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


def to_uint8(image: np.ndarray, rule: str = "clamp-round") -> np.ndarray:
    """A float image on the [0, 1] scale as 8-bit levels by ``rule`` (module docstring).

    ``clamp-round``: ``round(255 clip(F, 0, 1))``; ``clamp-truncate``:
    ``floor(255 clip(F, 0, 1))``; ``truncate-wrap``: ``trunc(255 F) mod 256``. The product
    ``255 F`` is formed in float32, as the published scripts form it.
    """
    v = np.asarray(image, dtype=np.float32)
    if rule == "clamp-round":
        return np.round(np.clip(v, 0.0, 1.0) * np.float32(255)).astype(np.uint8)
    if rule == "clamp-truncate":
        return np.floor(np.clip(v, 0.0, 1.0) * np.float32(255)).astype(np.uint8)
    if rule == "truncate-wrap":
        return np.mod(np.trunc(v * np.float32(255)).astype(np.int64), 256).astype(np.uint8)
    raise ValueError(f"8-bit rule must be clamp-round, clamp-truncate or truncate-wrap: {rule!r}")


def write_png(image: np.ndarray, path: str | os.PathLike, rule: str = "clamp-round") -> Path:
    """``image`` as an 8-bit grey PNG by ``rule`` (:func:`to_uint8`), written atomically."""
    from PIL import Image

    from fusion3d.io import atomic_path

    data = to_uint8(image, rule)
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


def _load_network(method: str, weights: str | os.PathLike | None, params: dict | None):
    """The checkpoint's network, its inference-time keys set from ``params``."""
    from fusion3d.learned.inference import load_model

    if weights is None:
        raise ValueError(f"--method {method}: a network needs --weights (a checkpoint)")
    return load_model(weights, "cpu", method=method, overrides=params)


def _fuse_arrays(
    method: str, mri: np.ndarray, pet: np.ndarray, weights, params, *, clip: bool = True
) -> np.ndarray:
    """Fuse two ``(D, H, W)`` arrays on [0, 1] with a classic method or a network."""
    import torch

    from fusion3d.baselines import DEFAULT_PARAMS
    from fusion3d.baselines import fuse as classic_fuse
    from fusion3d.learned.inference import fuse_tensor
    from fusion3d.learned.models.shared import check_keys

    if BY_NAME[method].kind == "classic":
        if weights is not None:
            raise ValueError(f"--method {method}: a classic fusion takes no --weights")
        check_keys(f"--set for {method}", params or {}, DEFAULT_PARAMS[method])
        return classic_fuse(method, mri, pet, **(params or {}))
    model = _load_network(method, weights, params)
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
        return fuse_tensor(model, m, p, amp="off", clip=clip).numpy()


def fuse_files(
    method: str,
    mri_path: str | os.PathLike,
    pet_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    params: dict | None = None,
    clamp_round: bool = False,
) -> Path:
    """Fuse one MRI-PET pair with ``method`` and write ``out_path`` (see the module docstring).

    ``clamp_round`` writes a PNG as ``round(255 clip(F, 0, 1))`` instead of the method's
    published 8-bit rule (:data:`PNG_RULES`).

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
        rule = "clamp-round" if clamp_round else PNG_RULES.get(method, "clamp-round")
        fused = _fuse_arrays(method, mri[..., None], pet[..., None], weights, params, clip=False)
        return write_png(fused[..., 0], out_path, rule)
    from fusion3d.io import save_nifti

    fused = _fuse_arrays(method, mri, pet, weights, params)
    return save_nifti(np.clip(fused, 0.0, 1.0), affine, out_path, dtype=np.float32)


def _jsonable(value):
    """Tuples as lists, so that a default prints as the JSON a ``--set`` takes."""
    return list(value) if isinstance(value, tuple) else value


def describe_methods() -> list[dict]:
    """Every method of :mod:`fusion3d.methods` with its kind and keys (``fusion3d methods``).

    Returns
    -------
    list of dict
        ``name``, ``label``, ``kind``, ``dims``; a classic method's ``fuse_keys`` (its
        parameters and defaults); a network's ``architecture``, ``import_as`` (its
        ``import-weights --method``), ``png_rule``, ``fuse_keys`` (the inference-time keys
        ``fuse --set`` may change, with their defaults), ``model_keys`` (every
        constructor key and default: the config's ``models.<method>``) and ``import_keys``
        (the keys ``import-weights --set`` takes).
    """
    from fusion3d.baselines import DEFAULT_PARAMS
    from fusion3d.learned.models.published import import_keys
    from fusion3d.learned.models.shared import constructor_keys
    from fusion3d.learned.recipes import recipe_for
    from fusion3d.learned.weights import IMPORT_METHODS
    from fusion3d.methods import METHODS

    imports = {arch: name for name, arch in IMPORT_METHODS.items()}
    out = []
    for m in METHODS:
        row = {"name": m.name, "label": m.label, "kind": m.kind, "dims": m.dims}
        if m.kind == "classic":
            row["fuse_keys"] = {k: _jsonable(v) for k, v in DEFAULT_PARAMS[m.name].items()}
        else:
            cls = recipe_for(m.name).model_class
            keys = {k: _jsonable(v) for k, v in constructor_keys(cls).items()}
            row.update(
                architecture=m.architecture,
                import_as=imports.get(m.architecture),
                png_rule=PNG_RULES.get(m.name) if m.dims == "2D" else None,
                fuse_keys={k: keys[k] for k in getattr(cls, "inference_keys", ())},
                model_keys=keys,
                import_keys=sorted(import_keys(imports[m.architecture])),
            )
        out.append(row)
    return out
