"""MATR's published training recipe: SSIM + RMI against both sources, Adam, 10 epochs.

Published source: tthinking/MATR, ``Train.py`` (settings, loss calls) and
``losses/__init__.py`` (SSIM, RMI). The published training step (Train.py:115-122), with
``ir`` the functional image (channel 0 of the input) and ``vi`` the MRI (channel 1)::

    out = model(cat(ir, vi))
    loss = 1 * ssim(out, ir) + 1 * ssim(out, vi) + 1 * RMI(out, ir) + 2.5 * RMI(out, vi)

``ssim_ir(out, ir)`` calls ``ssim(out, ir)`` (losses/__init__.py:24-27) and
``RMI_ir(out, ir)`` calls ``RMI(out, ir)`` with the fused image FIRST whatever its argument
names say (losses/__init__.py:14-17): ``RMILoss(input=out, target=ir)``. Here ``ir`` is our
PET slice and ``vi`` our MRI slice, on the 8-bit levels of the published ``ToTensor`` input
when the model's ``quantize_input`` is on (the default).

- :func:`ssim_loss`: ``1 - mean(SSIM map)``, 11 x 11 Gaussian window (sigma 1.5, cut to
  the image size), no padding ("valid"), one mean over batch and pixels, dynamic range
  ``L`` read from the FIRST argument (the fused image): ``max > 128`` -> 255 else 1, minus
  (``min < -0.5`` -> -1 else 0), so ``L = 2`` as soon as the tanh output dips below -0.5
  (losses/__init__.py:47-91).
- :class:`RMILoss`: region mutual information (losses/__init__.py:93-217): ``0.5`` x BCE
  with logits of the fused image against the source plus ``0.5`` x the RMI lower bound of
  ``sigmoid(fused)``: 3 x 3 max-pool (stride 3, padding 1), 3 x 3 regions (9-vectors),
  covariances in float64, ``eps = 5e-4 I``, ``0.5 log det`` (via Cholesky, ``+1e-8`` on the
  diagonal) / 9, summed over channels, averaged over the batch.

The loss terms reported are the weighted ones, as the published log (Train.py:118-128).
The published loss is float64 (the RMI terms are computed in double precision and added
to the float32 SSIM terms); it is returned as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion3d.learned.losses import gaussian_window
from fusion3d.learned.models.matr import MATR
from fusion3d.learned.models.published import convert_matr
from fusion3d.learned.models.shared import quantize_8bit
from fusion3d.learned.recipes.base import Recipe
from fusion3d.learned.settings import MATR_LOSS_TERMS as LOSS_TERMS
from fusion3d.learned.settings import MATRSettings
from fusion3d.learned.settings import check_matr_loss_weights as check_loss_weights

__all__ = [
    "LOSS_TERMS",
    "MATRLoss",
    "MATRRecipe",
    "MATR_RECIPE",
    "RMILoss",
    "gaussian_window",
    "ssim_loss",
]


def ssim_loss(img1: Tensor, img2: Tensor, window_size: int = 11) -> Tensor:
    """The published ``ssim(img1, img2)``: ``1 - mean SSIM`` (losses/__init__.py:47-91).

    Parameters
    ----------
    img1 : Tensor
        ``(B, C, H, W)``: the fused image (its range decides ``L``, as published).
    img2 : Tensor
        ``(B, C, H, W)``: the source image.
    window_size : int
        Gaussian window edge, cut to ``min(window_size, H, W)`` (published 11).

    Returns
    -------
    Tensor
        Scalar ``1 - mean(SSIM map)`` over batch, channels and valid pixels.
    """
    max_val = 255 if torch.max(img1) > 128 else 1
    min_val = -1 if torch.min(img1) < -0.5 else 0
    L = max_val - min_val
    channel, height, width = img1.shape[1:]
    real = min(window_size, height, width)
    window = gaussian_window(real).expand(channel, 1, real, real).contiguous()
    window = window.to(device=img1.device, dtype=img1.dtype)
    mu1 = F.conv2d(img1, window, groups=channel)
    mu2 = F.conv2d(img2, window, groups=channel)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, groups=channel) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, groups=channel) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, groups=channel) - mu1_mu2
    C1, C2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    v1 = 2.0 * sigma12 + C2
    v2 = sigma1_sq + sigma2_sq + C2
    ssim_map = ((2 * mu1_mu2 + C1) * v1) / ((mu1_sq + mu2_sq + C1) * v2)
    return 1 - ssim_map.mean()


class RMILoss(nn.Module):
    """The published region mutual information loss (``RMILoss``, losses/__init__.py:101-199).

    Every default is the published one (losses/__init__.py:103-111); the training uses them.

    Parameters
    ----------
    with_logits : bool
        BCE with logits, and ``sigmoid(input)`` before the RMI term (``True``).
    radius : int
        Region edge: 9-vectors (3).
    bce_weight : float
        ``bce_weight * BCE + (1 - bce_weight) * RMI`` (0.5).
    downsampling_method : str
        ``'max'``, ``'avg'`` or ``'region-extraction'`` (``'max'``).
    stride : int
        Pooling stride, kernel ``stride``, padding ``stride // 2`` (3).
    use_log_trace : bool
        ``log det`` through Cholesky (``True``) or ``torch.logdet``.
    use_double_precision : bool
        Covariances in float64 (``True``).
    epsilon : float
        Diagonal regulariser (``EPSILON = 0.0005``, losses/__init__.py:93).
    """

    def __init__(
        self,
        with_logits: bool = True,
        radius: int = 3,
        bce_weight: float = 0.5,
        downsampling_method: str = "max",
        stride: int = 3,
        use_log_trace: bool = True,
        use_double_precision: bool = True,
        epsilon: float = 0.0005,
    ) -> None:
        super().__init__()
        if downsampling_method not in ("max", "avg", "region-extraction"):
            raise ValueError(f"RMILoss: unknown downsampling_method {downsampling_method!r}")
        self.with_logits, self.radius, self.bce_weight = with_logits, radius, bce_weight
        self.downsampling_method, self.stride = downsampling_method, stride
        self.use_log_trace, self.use_double_precision = use_log_trace, use_double_precision
        self.epsilon = epsilon

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input``: the fused image (logits); ``target``: the source image in [0, 1]."""
        bce: Tensor | float = 0.0
        if self.bce_weight != 0:
            fn = F.binary_cross_entropy_with_logits if self.with_logits else F.binary_cross_entropy
            bce = fn(input, target).mean() * self.bce_weight
        if self.with_logits:
            input = torch.sigmoid(input)
        rmi = self.rmi_lower_bound(input, target).mean() * (1.0 - self.bce_weight)
        return rmi + bce

    def _regions(self, x: Tensor) -> Tensor:
        """Downsample, then all ``radius x radius`` regions: ``(B, C, radius**2, n)``."""
        stride = self.stride if self.downsampling_method == "region-extraction" else 1
        if self.stride != 1 and self.downsampling_method != "region-extraction":
            pool = F.max_pool2d if self.downsampling_method == "max" else F.avg_pool2d
            x = pool(x, kernel_size=self.stride, stride=self.stride, padding=self.stride // 2)
        regions = F.unfold(x, kernel_size=self.radius, stride=stride)
        return regions.view((*x.shape[:2], self.radius**2, -1))

    def rmi_lower_bound(self, input: Tensor, target: Tensor) -> Tensor:
        """The published ``rmi_loss`` (losses/__init__.py:142-174): a scalar."""
        if input.shape != target.shape:
            raise ValueError(f"RMILoss: shapes {tuple(input.shape)} and {tuple(target.shape)}")
        n = self.radius * self.radius
        y, p = self._regions(target), self._regions(input)
        if self.use_double_precision:
            y, p = y.double(), p.double()
        eps = (torch.eye(n, dtype=y.dtype, device=y.device) * self.epsilon)[None, None]
        y = y - y.mean(dim=3, keepdim=True)
        p = p - p.mean(dim=3, keepdim=True)
        y_cov = y @ y.transpose(-2, -1)
        p_cov = p @ p.transpose(-2, -1)
        y_p_cov = y @ p.transpose(-2, -1)
        inv = torch.linalg.inv(p_cov + eps)
        m = y_cov - y_p_cov @ inv.transpose(-2, -1) @ y_p_cov.transpose(-2, -1)
        if self.use_log_trace:  # published torch.cholesky (lower), 2 sum log(diag + 1e-8)
            diag = torch.diagonal(torch.linalg.cholesky(m + eps), dim1=-2, dim2=-1)
            rmi = 0.5 * (2 * torch.sum(torch.log(diag + 1e-8), dim=-1))
        else:
            rmi = 0.5 * torch.logdet(m + eps)
        return (rmi / float(n)).sum(dim=1).mean(dim=0)


class MATRLoss(nn.Module):
    """The published training loss on one batch (Train.py:115-122); see the module docstring.

    Parameters
    ----------
    weights : dict
        ``{term: weight}`` for :data:`LOSS_TERMS` (published ``[1, 1, 1, 2.5]``, Train.py:33).
    quantize_input : bool
        Round the batch to 8-bit levels before the forward pass and the loss (the model's
        ``quantize_input``: the published 8-bit ``ToTensor`` input, Train.py:56-63).
    ssim_window : int
        SSIM window edge (published 11).
    """

    def __init__(
        self, weights: Mapping[str, float], quantize_input: bool = True, ssim_window: int = 11
    ) -> None:
        super().__init__()
        self.weights = check_loss_weights(weights)
        self.quantize_input = bool(quantize_input)
        self.ssim_window = int(ssim_window)
        self.rmi = RMILoss()

    def terms(self, fused: Tensor, mri: Tensor, pet: Tensor) -> dict[str, Tensor]:
        """The four weighted terms, published argument order (fused image first)."""
        w = self.weights
        return {
            "ssim_pet": w["ssim_pet"] * ssim_loss(fused, pet, self.ssim_window),
            "ssim_mri": w["ssim_mri"] * ssim_loss(fused, mri, self.ssim_window),
            "rmi_pet": w["rmi_pet"] * self.rmi(fused, pet),
            "rmi_mri": w["rmi_mri"] * self.rmi(fused, mri),
        }

    def forward(self, fwd, mri: Tensor, pet: Tensor) -> tuple[Tensor, dict[str, float]]:
        if self.quantize_input:
            mri, pet = quantize_8bit(mri), quantize_8bit(pet)
        fused = fwd(mri, pet)
        terms = self.terms(fused, mri, pet)
        loss = terms["ssim_pet"] + terms["ssim_mri"] + terms["rmi_pet"] + terms["rmi_mri"]
        return loss, {k: float(v.detach()) for k, v in terms.items()}


class MATRRecipe(MATRSettings, Recipe):
    """MATR (``models.matr``): see the module docstring. Constant lr (no scheduler). Its
    published settings and their checks: :class:`~fusion3d.learned.settings.MATRSettings`."""

    model_class = MATR

    def build_loss(self, cfg: Mapping[str, Any], model: nn.Module) -> nn.Module:
        return MATRLoss(cfg["loss_weights"], quantize_input=getattr(model, "quantize_input", True))

    def convert_published(self, state, **sizes):
        return convert_matr(state, **sizes)


MATR_RECIPE = MATRRecipe()
