"""DC2Fusion's training recipe (2D and 3D): the paper's loss, Adam and the poly schedule.

Published settings (louelin/DC2Fusion and the paper, ``../shared/PAPER.md``): Adam at
lr 1e-4, poly decay (power 0.9) over 500 epochs, batch 1, the loss
``2 (LNCC + (1 - SSIM) + L1)(F, MRI) + (LNCC + (1 - SSIM) + L1)(F, PET)``
(:class:`~fusion3d.learned.losses.FusionLoss`) and the published MONAI augmentation
(:func:`~fusion3d.learned.data.augment_pair`). Own keys: ``poly_power``, ``loss_weights``,
``loss_terms``, ``rotation_interval`` (``None``: follow the model's ``variant``) and
``calibrate_output`` (:func:`calibrate_output_scale`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fusion3d.learned.data import ROTATION_INTERVALS
from fusion3d.learned.losses import TERMS, FusionLoss
from fusion3d.learned.models import DC2Fusion
from fusion3d.learned.recipes.base import Recipe, check_positive_number

__all__ = ["DCFB_RECIPE", "DCFBLoss", "DCFBRecipe", "calibrate_output_scale"]


class DCFBLoss(nn.Module):
    """``FusionLoss(fwd(mri, pet), mri, pet)``: the fused image against both sources."""

    def __init__(self, spatial_dims: int, weights: Mapping[str, float], terms) -> None:
        super().__init__()
        self.fusion_loss = FusionLoss(spatial_dims, weights, terms)

    def forward(self, fwd, mri: Tensor, pet: Tensor) -> tuple[Tensor, dict[str, float]]:
        return self.fusion_loss(fwd(mri, pet), mri, pet)


def calibrate_output_scale(model: DC2Fusion, mri: Tensor, pet: Tensor) -> float:
    """Rescale the head's last conv so the initial fused image has the sources' mean magnitude.

    The L1NW layer ``F = |f1|_1 f1 + |f2|_1 f2`` multiplies by sums over all voxels, so
    with PyTorch's default initialisation ``|F|`` starts ~``N`` times too large
    (``N`` = voxels) and short trainings spend their budget shrinking it. ``F`` is
    homogeneous of degree 2 in the head's last (linear) conv, so scaling its weight and
    bias by ``s = sqrt(mean((mri + pet) / 2) / mean(|F|))`` sets the initial scale
    exactly. A data-dependent initialisation only: architecture and formula are the
    paper's (switch off with ``train_config["calibrate_output"] = False``).

    Parameters
    ----------
    model : DC2Fusion
    mri, pet : Tensor
        One batch ``(B, 1, *S)`` on the model's device.

    Returns
    -------
    float
        The factor ``s`` applied.
    """
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with torch.no_grad():
        fused = model(mri, pet).float()
        current = float(fused.abs().mean())
        target = float(((mri + pet) / 2).float().mean())
        if not (math.isfinite(current) and current > 0 and target > 0):
            return 1.0
        s = math.sqrt(target / current)
        model.head_out.weight.mul_(s)
        if model.head_out.bias is not None:
            model.head_out.bias.mul_(s)
        for name, buf in model.named_buffers():  # undo BatchNorm running-stat updates
            buf.copy_(buffers[name])
    return s


def _resolve_rotation_interval(value: str | None, model_config: Mapping[str, Any]) -> str:
    """``None`` -> the model's variant decides (``published`` -> ``published``)."""
    if value is None:
        variant = (model_config or {}).get("variant", "fixed")
        return "published" if variant == "published" else "symmetric"
    if value not in ROTATION_INTERVALS:
        raise ValueError(
            f"train_config['rotation_interval'] must be null or one of {ROTATION_INTERVALS}, "
            f"got {value!r}"
        )
    return value


class DCFBRecipe(Recipe):
    """DC2Fusion (``models.dcfb3d`` / ``models.dcfb2d``): see the module docstring."""

    architecture = "dcfb"
    model_class = DC2Fusion
    defaults = {
        "epochs": 500,  # paper, "Training"
        "lr": 1e-4,  # paper; published train.py
        "batch_size": 1,
        "augment": True,  # published MONAI transforms (fusion3d.learned.data.augment_pair)
        "poly_power": 0.9,  # published poly learning-rate decay
        "loss_weights": {"mri": 2.0, "pet": 1.0},  # paper: 2 for the MRI terms, 1 for the PET
        "loss_terms": list(TERMS),
        "rotation_interval": None,
        "calibrate_output": True,
    }

    def check_config(self, cfg: dict[str, Any], model_config: Mapping[str, Any]) -> None:
        cfg["poly_power"] = check_positive_number(cfg, "poly_power", allow_zero=True)
        if not isinstance(cfg["calibrate_output"], bool):
            raise ValueError(
                f"train_config['calibrate_output'] must be true or false, "
                f"got {cfg['calibrate_output']!r}"
            )
        cfg["rotation_interval"] = _resolve_rotation_interval(
            cfg["rotation_interval"], model_config
        )
        cfg["loss_weights"] = {k: float(v) for k, v in dict(cfg["loss_weights"]).items()}
        cfg["loss_terms"] = list(cfg["loss_terms"])
        FusionLoss(3, cfg["loss_weights"], cfg["loss_terms"])  # validates weights and terms

    def build_loss(self, cfg: Mapping[str, Any], model: nn.Module) -> nn.Module:
        return DCFBLoss(model.spatial_dims, cfg["loss_weights"], cfg["loss_terms"])

    def build_scheduler(self, optimizer, cfg):
        epochs, power = cfg["epochs"], cfg["poly_power"]
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: max(0.0, 1.0 - e / epochs) ** power
        )

    def on_fresh_start(self, model, mri, pet, cfg) -> str | None:
        if not cfg["calibrate_output"]:
            return None
        factor = calibrate_output_scale(model, mri, pet)
        return f"initial output scale calibrated: head_out x {factor:.4g}"

    def convert_published(self, state, **sizes):
        from fusion3d.learned.models.published import convert_dc2fusion

        return convert_dc2fusion(state, **sizes)


DCFB_RECIPE = DCFBRecipe()
