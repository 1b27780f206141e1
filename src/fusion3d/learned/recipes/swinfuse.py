"""SwinFuse's training recipe: the published auto-encoder loss ``L1 + 1000 (1 - MS-SSIM)``, Adam 1e-5.

Published settings (Zhishe-Wang/SwinFuse, ``train.py`` and ``args_fusion.py``): the
auto-encoder ``finaldecoder`` reconstructs single grey images (MS-COCO 2014, 80 000 images
resized to 224 x 224, ``train.py:24``, ``args_fusion.py:14-16``), 4 images a batch, 50
epochs, ``Adam(params, lr=1e-5)`` with PyTorch's other defaults, no schedule, no
augmentation, and the loss (``train.py:88-98``)::

    total = L1(out, x) / n + ssim_weight * (1 - msssim(out, x, normalize=True)) / n

with ``n = len(out)`` (the images of the batch), ``ssim_weight = args.ssim_weight[3] = 1000``
(``train.py:28``, ``args_fusion.py:19``), ``L1`` the mean absolute error
(``torch.nn.L1Loss``) and ``msssim`` the repository's own ``pytorch_msssim/__init__.py``,
reproduced in :func:`msssim` (its value range decided from ``out`` at every scale, valid
Gaussian filtering with window 11 and sigma 1.5, ``prod(mcs[:-1] ** w * mssim[-1] ** w)``).

Our batch of slice pairs trains the auto-encoder as the published code trains on its
images: the MRI and the PET slices of the batch are stacked into one batch of ``2 B``
single images (``batch_size: 2`` pairs = the published 4 images). Each image goes
through the published input pipeline (``utils.py:116-140``): 8-bit grey
(``eight_bit``), stretched to its own min..max and resized to ``img_size`` by nearest
neighbour (``train_stretch``, ``train_resize``: ``scipy.misc.imresize`` byte-scales a
float image before resizing), then ``(v - 127.5) / 127.5``.

Own train-config keys: ``ssim_weight``, ``msssim_normalize``, ``eight_bit``,
``train_stretch``, ``train_resize``, ``betas``, ``eps``, ``weight_decay``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion3d.learned.losses import gaussian_window
from fusion3d.learned.models.published import convert_swinfuse
from fusion3d.learned.models.swinfuse import SwinFuse
from fusion3d.learned.recipes.base import Recipe
from fusion3d.learned.settings import SwinFuseSettings

__all__ = [
    "MSSSIM_WEIGHTS",
    "SWINFUSE_RECIPE",
    "SwinFuseLoss",
    "SwinFuseRecipe",
    "msssim",
    "pil_nearest_index",
    "ssim",
    "training_images",
]

#: ``pytorch_msssim/__init__.py:73``.
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ssim(img1: Tensor, img2: Tensor, window_size: int = 11) -> tuple[Tensor, Tensor]:
    """``(mean SSIM, mean contrast-structure)`` of ``pytorch_msssim.ssim(..., full=True)``.

    ``val_range=None`` as ``msssim`` calls it: ``L = max_val - min_val`` with ``max_val``
    255 if ``max(img1) > 128`` else 1 and ``min_val`` -1 if ``min(img1) < -0.5`` else 0;
    the window is ``min(window_size, H, W)``; valid filtering (``padding=0``); means over
    the whole batch (``size_average=True``). ``pytorch_msssim/__init__.py:19-68``.
    """
    max_val = 255 if torch.max(img1) > 128 else 1
    min_val = -1 if torch.min(img1) < -0.5 else 0
    big_l = max_val - min_val
    _, channel, height, width = img1.shape
    window = gaussian_window(min(window_size, height, width)).to(img1.device, img1.dtype)
    window = window.expand(channel, 1, *window.shape[2:]).contiguous()

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, padding=0, groups=channel)

    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = blur(img1 * img1) - mu1_sq
    sigma2_sq = blur(img2 * img2) - mu2_sq
    sigma12 = blur(img1 * img2) - mu1_mu2
    c1, c2 = (0.01 * big_l) ** 2, (0.03 * big_l) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma1_sq + sigma2_sq + c2
    cs = torch.mean(v1 / v2)
    ssim_map = ((2 * mu1_mu2 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    return ssim_map.mean(), cs


def msssim(img1: Tensor, img2: Tensor, window_size: int = 11, normalize: bool = False) -> Tensor:
    """The repository's MS-SSIM (``pytorch_msssim/__init__.py:71-97``), five scales.

    ``normalize`` maps each scale's SSIM and CS to ``(x + 1) / 2`` first; the result is
    ``prod_{i<4}(cs_i ** w_i * ssim_4 ** w_4)`` as published (not the textbook
    ``prod cs_i ** w_i * ssim_4 ** w_4``).
    """
    weights = torch.tensor(MSSSIM_WEIGHTS, dtype=torch.float32, device=img1.device)
    mssim, mcs = [], []
    for level in range(len(MSSSIM_WEIGHTS)):
        if level:  # the published loop also pools after the last scale, unused (needs S >= 32)
            img1, img2 = F.avg_pool2d(img1, (2, 2)), F.avg_pool2d(img2, (2, 2))
        sim, cs = ssim(img1, img2, window_size)
        mssim.append(sim)
        mcs.append(cs)
    mssim_t, mcs_t = torch.stack(mssim), torch.stack(mcs)
    if normalize:
        mssim_t, mcs_t = (mssim_t + 1) / 2, (mcs_t + 1) / 2
    pow1, pow2 = mcs_t**weights, mssim_t**weights
    return torch.prod(pow1[:-1] * pow2[-1])


def training_images(
    x: Tensor, img_size: int, *, eight_bit: bool = True, stretch: bool = True, resize: bool = True
) -> Tensor:
    """Our ``(N, 1, H, W)`` slices on [0, 1] -> the published training images on [-1, 1].

    ``utils.get_train_images_auto`` (``utils.py:116-140``): the 8-bit image (``eight_bit``:
    ``round(255 x)``), byte-scaled to its own min..max by ``scipy.misc.imresize``
    (``stretch``: ``floor((q - min) 255 / (max - min) + 0.5)``, 0 for a constant image),
    resized to ``img_size`` by PIL's nearest neighbour (``resize``,
    :func:`pil_nearest_index`), then ``(v - 127.5) / 127.5``.
    """
    x = x.float()
    q = torch.round(x.clamp(0, 1) * 255) if eight_bit else x * 255
    if stretch:
        lo = q.amin(dim=(1, 2, 3), keepdim=True)
        span = q.amax(dim=(1, 2, 3), keepdim=True) - lo
        q = (q - lo) * (255 / torch.where(span > 0, span, 1))
        q = torch.floor(q.clamp(0, 255) + 0.5) if eight_bit else q
    if tuple(q.shape[2:]) != (img_size, img_size):
        if not resize:
            raise ValueError(
                f"SwinFuse training: slices {tuple(q.shape[2:])} differ from the model's "
                f"img_size {img_size} and train_resize is false"
            )
        rows = torch.tensor(pil_nearest_index(q.shape[2], img_size), device=q.device)
        cols = torch.tensor(pil_nearest_index(q.shape[3], img_size), device=q.device)
        q = q[:, :, rows][:, :, :, cols]
    return (q - 127.5) / 127.5


def pil_nearest_index(n_in: int, n_out: int) -> list[int]:
    """Source index of each output pixel of PIL's ``NEAREST`` resize (``ImagingScaleAffine``).

    PIL starts at ``a / 2`` with ``a = n_in / n_out`` and adds ``a`` per pixel in double
    precision, truncating; ``floor((i + 0.5) a)`` in exact arithmetic (torch's
    ``nearest-exact``) differs where that lands on an integer (64 -> 224: pixel 3, 10, ...).
    """
    a = n_in / n_out
    x, out = a * 0.5, []
    for _ in range(n_out):
        out.append(min(int(x), n_in - 1))
        x += a
    return out


class SwinFuseLoss(nn.Module):
    """The published auto-encoder loss on the stacked MRI and PET slices (module docstring)."""

    def __init__(
        self,
        img_size: int,
        ssim_weight: float = 1000.0,
        msssim_normalize: bool = True,
        eight_bit: bool = True,
        train_stretch: bool = True,
        train_resize: bool = True,
    ) -> None:
        super().__init__()
        self.img_size, self.ssim_weight = int(img_size), float(ssim_weight)
        self.normalize = bool(msssim_normalize)
        self.prep = {"eight_bit": eight_bit, "stretch": train_stretch, "resize": train_resize}

    def forward(self, fwd, mri: Tensor, pet: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = training_images(torch.cat([mri, pet], dim=0), self.img_size, **self.prep)
        out = fwd(x).float()
        n = len(out)
        pixel = F.l1_loss(out, x) / n
        ssim_term = (1 - msssim(out, x, normalize=self.normalize)) / n
        total = pixel + self.ssim_weight * ssim_term
        return total, {"pixel": float(pixel.detach()), "ssim": float(ssim_term.detach())}


def _inner_module(model: nn.Module) -> nn.Module:
    """The module inside DDP / ``torch.compile`` wrappers."""
    for attr in ("module", "_orig_mod"):
        while hasattr(model, attr) and isinstance(getattr(model, attr), nn.Module):
            model = getattr(model, attr)
    return model


class SwinFuseRecipe(SwinFuseSettings, Recipe):
    """SwinFuse (``models.swinfuse``): see the module docstring; its published settings and
    their checks: :class:`~fusion3d.learned.settings.SwinFuseSettings`."""

    model_class = SwinFuse

    def build_loss(self, cfg: Mapping[str, Any], model: nn.Module) -> nn.Module:
        return SwinFuseLoss(
            _inner_module(model).img_size,
            cfg["ssim_weight"],
            cfg["msssim_normalize"],
            cfg["eight_bit"],
            cfg["train_stretch"],
            cfg["train_resize"],
        )

    def convert_published(self, state, **sizes):
        return convert_swinfuse(state, **sizes)


SWINFUSE_RECIPE = SwinFuseRecipe()
