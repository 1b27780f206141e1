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

from fusion3d.learned.losses import FusionLoss
from fusion3d.learned.models import DC2Fusion
from fusion3d.learned.recipes.base import Recipe
from fusion3d.learned.settings import DCFBSettings

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


class DCFBRecipe(DCFBSettings, Recipe):
    """DC2Fusion (``models.dcfb3d`` / ``models.dcfb2d``): see the module docstring; its
    published settings and their checks: :class:`~fusion3d.learned.settings.DCFBSettings`."""

    model_class = DC2Fusion

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
