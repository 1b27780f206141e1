"""Apply a trained fusion network to image pairs and write the fused volumes.

Every network fuses through its ``fuse(mri, pet)`` (the published inference path: for the
auto-encoders SwinFuse and DILRAN, encode both sources, fuse the features with the
published rule, decode; for DC2Fusion and MATR, the forward pass), on ``(B, 1, *S)``
tensors on the [0, 1] scale. A 2D network fuses a volume slice by slice.

Output range: a network's raw output is unbounded (DC2Fusion's L1NW layer is a weighted
sum without normalisation). The sources are in [0, 1] and the paper's metrics use a
data range of 1, so the fused volume is clipped to [0, 1] before it is written
(``clip=False`` keeps the raw map). Validation during training scores the same
clipped output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fusion3d.io import save_nifti
from fusion3d.learned.data import load_item
from fusion3d.learned.devices import autocast_context, resolve_device

__all__ = [
    "checkpoint_architecture",
    "fuse_items",
    "fuse_tensor",
    "fuse_volume",
    "load_model",
    "read_checkpoint",
]

log = logging.getLogger(__name__)


def read_checkpoint(model_path: str | os.PathLike) -> dict:
    """A self-describing checkpoint as a dict (``weights_only=True``), its keys checked.

    Raises
    ------
    FileNotFoundError
        When ``model_path`` does not exist.
    ValueError
        When the file is not a checkpoint, or lacks ``model_state`` or the constructor
        arguments (naming the file).
    """
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        raise ValueError(_not_a_checkpoint(path, ckpt))
    if not isinstance(ckpt.get("init_args", ckpt.get("config")), dict):
        raise ValueError(
            f"{path}: checkpoint lacks the constructor arguments ('init_args' or 'config')"
        )
    return ckpt


def _not_a_checkpoint(path: Path, obj) -> str:
    """Why ``obj`` (loaded from ``path``) is no checkpoint; for a published state_dict, how
    to convert it (``fusion3d import-weights``)."""
    from fusion3d.learned.models.published import PUBLISHED_NETWORKS, identify_published

    network = identify_published(obj)
    if network is None:
        return f"{path}: not a fusion3d checkpoint (it lacks the key 'model_state')"
    name = PUBLISHED_NETWORKS[network][1]
    return (
        f"{path}: a state_dict saved by the published {name} code, not a fusion3d checkpoint; "
        f"convert it first: fusion3d import-weights --method {network} {path} "
        f"{path.with_name(path.stem + '-fusion3d.pt')}"
    )


def checkpoint_architecture(ckpt: dict) -> str:
    """The architecture key of a checkpoint (``method`` in files written before
    ``architecture`` existed; ``"dcfb"`` in files written before other networks)."""
    return str(ckpt.get("architecture", ckpt.get("method", "dcfb")))


def _init_args(recipe, ckpt: dict, path: Path, overrides: dict | None) -> dict:
    """The checkpoint's constructor arguments, old spellings renamed, ``overrides`` applied.

    ``overrides`` may only hold the network's ``inference_keys`` (ValueError naming the
    known ones otherwise).
    """
    from fusion3d.learned.models.shared import check_keys, constructor_keys

    cls = recipe.model_class
    renamed = getattr(cls, "renamed_args", {})
    args = {renamed.get(k, k): v for k, v in ckpt.get("init_args", ckpt.get("config")).items()}
    overrides = dict(overrides or {})
    if overrides:
        allowed = tuple(getattr(cls, "inference_keys", ()))
        fixed = sorted(set(overrides) & set(constructor_keys(cls)) - set(allowed))
        if fixed or not allowed:
            what = f"{fixed[0]} is fixed" if fixed else f"{', '.join(sorted(overrides))}: fixed"
            raise ValueError(
                f"--set {what} by the checkpoint {path.name} (a size or trained switch of "
                f"{cls.__name__}); keys fuse may set: {', '.join(allowed) or 'none'}"
            )
        check_keys(f"--set for {cls.__name__}", overrides, allowed, renamed)
    return {**args, **overrides}


def load_model(
    model_path: str | os.PathLike,
    device: torch.device | str = "cpu",
    *,
    method: str | None = None,
    overrides: dict | None = None,
) -> nn.Module:
    """Rebuild a network from a self-describing checkpoint alone (``weights_only=True``).

    The architecture is the checkpoint's (:func:`checkpoint_architecture`); the network is
    built from its ``init_args`` (the fully resolved constructor arguments that training
    writes; old spellings renamed), so a later change of a default
    cannot change a loaded model. A checkpoint with only ``config`` (written before
    ``init_args`` existed) is built from that.

    Parameters
    ----------
    method : str, optional
        The architecture or method key the caller expects (e.g. ``"matr"``, ``"dcfb3d"``):
        a checkpoint of another architecture is refused, naming both.
    overrides : dict, optional
        Values for the network's ``inference_keys`` (``fusion3d fuse --set``): constructor
        arguments that change how it fuses but not its weights.

    Raises
    ------
    FileNotFoundError
        When ``model_path`` does not exist.
    ValueError
        When the file is not a checkpoint, is of another method than ``method``, lacks
        ``model_state`` or the constructor arguments, or its weights do not fit them.
    """
    from fusion3d.learned.recipes import recipe_for

    path = Path(model_path)
    ckpt = read_checkpoint(path)
    arch = checkpoint_architecture(ckpt)
    if method is not None and recipe_for(method).architecture != arch:
        raise ValueError(
            f"{path}: a checkpoint of {arch!r}, not of {method!r} (its architecture "
            f"{recipe_for(method).architecture!r})"
        )
    recipe = recipe_for(arch)
    init_args = _init_args(recipe, ckpt, path, overrides)
    try:
        model = recipe.build_model(init_args)
        model.load_state_dict(ckpt["model_state"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: cannot rebuild the network from the checkpoint ({exc})") from exc
    return model.to(device).eval()


def _fuse_step(model: nn.Module):
    """What fuses one batch of pairs: the model's ``fuse`` (its inference path), else forward."""
    return getattr(model, "fuse", None) or model


def fuse_tensor(
    model: nn.Module,
    mri: torch.Tensor,
    pet: torch.Tensor,
    *,
    amp: str | bool = "auto",
    slice_batch_size: int = 16,
    clip: bool = True,
) -> torch.Tensor:
    """Fuse one volume pair ``(D, H, W)`` x2 on their device -> ``(D, H, W)`` float32 there.

    A 2D model runs slice by slice along the LAST axis, ``slice_batch_size`` slices
    per forward pass. Call under ``torch.inference_mode()`` / ``no_grad``.
    """
    if mri.shape != pet.shape or mri.ndim != 3:
        raise ValueError(
            f"fuse_tensor: expected two equal 3D volumes, got {tuple(mri.shape)} and "
            f"{tuple(pet.shape)}"
        )
    m, p = mri.float(), pet.float()
    step = _fuse_step(model)
    with autocast_context(m.device, amp):
        if model.spatial_dims == 3:
            fused = step(m[None, None], p[None, None])[0, 0]  # (1, 1, D, H, W) -> (D, H, W)
        else:
            # (D, H, W) -> slices along the last axis: (W, 1, D, H)
            ms = m.permute(2, 0, 1)[:, None]
            ps = p.permute(2, 0, 1)[:, None]
            outs = [
                step(ms[i : i + slice_batch_size], ps[i : i + slice_batch_size])
                for i in range(0, ms.shape[0], slice_batch_size)
            ]
            fused = torch.cat(outs)[:, 0].permute(1, 2, 0)  # (W, D, H) -> (D, H, W)
    fused = fused.float()
    return fused.clamp(0.0, 1.0) if clip else fused


def fuse_volume(
    model: nn.Module,
    mri: np.ndarray,
    pet: np.ndarray,
    device: torch.device,
    *,
    amp: str | bool = "auto",
    slice_batch_size: int = 16,
    clip: bool = True,
) -> np.ndarray:
    """Fuse one volume pair ``(D, H, W)`` x2 -> ``(D, H, W)`` float32 on the host.

    :func:`fuse_tensor` on ``device``. Call under ``torch.inference_mode()`` / ``no_grad``.
    """
    if mri.shape != pet.shape or mri.ndim != 3:
        raise ValueError(
            f"fuse_volume: expected two equal 3D arrays, got {mri.shape} and {pet.shape}"
        )
    m = torch.from_numpy(np.ascontiguousarray(mri, dtype=np.float32)).to(device)
    p = torch.from_numpy(np.ascontiguousarray(pet, dtype=np.float32)).to(device)
    fused = fuse_tensor(model, m, p, amp=amp, slice_batch_size=slice_batch_size, clip=clip)
    return fused.cpu().numpy()


def fuse_items(
    model_path: str | os.PathLike,
    items: Sequence[tuple[str, str | os.PathLike, str | os.PathLike]],
    out_dir: str | os.PathLike,
    *,
    device: str | None = None,
    gpu: bool = False,
    batch_size: int = 1,
    clip: bool = True,
    method: str | None = None,
) -> pd.DataFrame:
    """Fuse every ``(subject_id, mri_path, pet_path)`` and write ``<subject_id>_fused.nii.gz``.

    Parameters
    ----------
    model_path : path
        ``model.pt`` written by :func:`fusion3d.learned.training.train_model`.
    items : sequence
        ``(subject_id, mri_path, pet_path)`` on the model grid.
    out_dir : path
        Output folder (created).
    device : str, optional
        ``None``: CUDA if available, else CPU (with a warning).
    gpu : bool
        The study asked for a GPU (``resources.gpu``): stop at once, with what was found,
        when no usable CUDA device is there (never a silent CPU run).
    batch_size : int
        3D: volumes per forward pass; 2D: slices per forward pass is ``16 * batch_size``.
    clip : bool
        Clip the fused image to [0, 1] (see the module docstring).
    method : str, optional
        The method (or architecture) the checkpoint must be of (:func:`load_model`).

    Returns
    -------
    pandas.DataFrame
        Columns ``subject_id``, ``fused_path``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device, gpu=gpu)
    model = load_model(model_path, dev, method=method)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    items = list(items)
    with torch.inference_mode():
        for start in range(0, len(items), batch_size if model.spatial_dims == 3 else 1):
            chunk = items[start : start + (batch_size if model.spatial_dims == 3 else 1)]
            loaded = [load_item(item) for item in chunk]
            if (
                model.spatial_dims == 3
                and len(loaded) > 1
                and len({x.mri.shape for x in loaded}) == 1
            ):
                m = torch.from_numpy(np.stack([x.mri for x in loaded])[:, None]).to(dev)
                p = torch.from_numpy(np.stack([x.pet for x in loaded])[:, None]).to(dev)
                with autocast_context(dev, "auto"):
                    fused_b = _fuse_step(model)(m, p)[
                        :, 0
                    ].float()  # (B, 1, D, H, W) -> (B, D, H, W)
                if clip:
                    fused_b = fused_b.clamp(0.0, 1.0)
                fused_list = list(fused_b.cpu().numpy())
            else:
                fused_list = [
                    fuse_volume(
                        model, x.mri, x.pet, dev, slice_batch_size=16 * batch_size, clip=clip
                    )
                    for x in loaded
                ]
            for pair, fused in zip(loaded, fused_list, strict=True):
                sid = pair.subject_id
                path = save_nifti(fused, pair.affine, out / f"{sid}_fused.nii.gz", dtype=np.float32)
                rows.append({"subject_id": sid, "fused_path": str(path)})
                log.info("fused %s -> %s", sid, path)
    return pd.DataFrame(rows, columns=["subject_id", "fused_path"])
