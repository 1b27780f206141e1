"""DILRAN's training recipe: the published auto-encoder training of simonZhou86/dilran.

The published ``train_with_val.py`` trains ``fullModel`` as an auto-encoder: the CT and
MRI slices are pooled into one set (``train_total = cat(train_ct, train_mri)``, line 78),
shuffled batches of 4 images are reconstructed (``img_out = model(img)``, line 141) and
the loss is ``loss.loss_func2`` (lines 137-148)::

    L = MSE(out, img) + lambda1 * Sobel(out, img) + lambda2 * Perceptual(out, img)

- MSE: ``mean((out - img)^2)`` (``loss.py`` lines 84-88);
- Sobel (``grad_loss``, lines 22-62): ``G_x``, ``G_y`` = valid (unpadded) convolutions with
  the Sobel kernels ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` and
  ``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]``;
  ``mean((|G_x out| - |G_x img|)^2) + mean((|G_y out| - |G_y img|)^2)``;
- Perceptual (``our_utils.Percep_loss``, lines 75-127): ImageNet ``vgg16_bn().features``
  in eval mode, frozen, fed the grey image repeated on 3 channels (no ImageNet
  normalisation); taps at the BatchNorm two layers before each max-pooling
  (``block_idx = [0, 1, 2]``, ``meta_config.py`` line 21: layers 4, 11, 21); the sum
  over taps of ``mean((phi(out) - phi(img))^2)``. The published hooks keep the BatchNorm's
  output tensor, which torchvision's following ``ReLU(inplace=True)`` then overwrites when
  it is inside the run slice: taps 4 and 11 are therefore post-ReLU, tap 21 (the slice's
  last layer) pre-ReLU. :class:`PerceptualLoss` reproduces exactly that.

Our batch holds ``B`` (MRI, PET) slice pairs; :class:`DilranLoss` stacks them into one
batch of ``2 B`` images (MRI first) and reconstructs it with one forward, as the published
code reconstructs a pooled batch (so ``batch_size: 2`` pairs = the published 4 images; the
published batches mix random CT and MRI images, ours the two sources of the same slices).
The images are rounded to ``k / 255`` first when the model's ``quantize_input`` is on
(the published training data are 8-bit PNGs / 255, ``dataset_loader.py`` lines 83-84).

Divergence (switch): the perceptual term needs the ImageNet VGG16-bn weights, which the
published code downloads (``vgg16_bn(pretrained=True)``, ``train_with_val.py`` line 104)
and which cannot be downloaded here. ``perceptual_weights: null`` (the default) drops the
term (``L = MSE + lambda1 Sobel``); a path to a local torchvision ``vgg16_bn`` state_dict
file (``torch.save(torchvision.models.vgg16_bn(weights="IMAGENET1K_V1").state_dict(), f)``)
runs it exactly. torchvision is not needed: :class:`VGG16BNFeatures` rebuilds the
``features`` part with torchvision's layer indices.

Own train-config keys: ``lambda1``, ``lambda2``, ``perceptual_weights``,
``perceptual_blocks``, ``betas``, ``eps``, ``weight_decay``, ``lr_decay``, ``lr_step``,
``lr_gamma``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion3d.learned.models.dilran import DILRAN
from fusion3d.learned.models.published import convert_dilran
from fusion3d.learned.models.shared import quantize_8bit
from fusion3d.learned.recipes.base import Recipe
from fusion3d.learned.settings import DilranSettings

__all__ = [
    "DILRAN_RECIPE",
    "DilranLoss",
    "DilranRecipe",
    "PerceptualLoss",
    "VGG16BNFeatures",
    "load_vgg16_bn_features",
    "sobel_loss",
]

#: torchvision's VGG16 configuration "D" (channels; "M" = 2x2 max pooling).
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))  # loss.py line 32
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))  # loss.py line 33


class VGG16BNFeatures(nn.Module):
    """``torchvision.models.vgg16_bn().features`` with the same layer indices (keys
    ``features.{i}.*``): per channel entry a 3x3 conv, BatchNorm, ReLU(inplace); "M" max
    pooling."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(True)]
                c_in = v
        self.features = nn.Sequential(*layers)


def load_vgg16_bn_features(path: str | Path) -> nn.Sequential:
    """The ``features`` of a torchvision ``vgg16_bn`` state_dict file (``classifier.*`` ignored).

    Raises
    ------
    ValueError
        When the file is missing or its ``features.*`` keys or shapes do not fit (names them).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"train_config['perceptual_weights']: no file {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    feats = {k.removeprefix("module."): v for k, v in state.items()}
    feats = {k: v for k, v in feats.items() if k.startswith("features.")}
    vgg = VGG16BNFeatures()
    want = vgg.state_dict()
    missing = sorted(set(want) - set(feats))
    unexpected = sorted(set(feats) - set(want))
    shapes = [
        f"{k} (expected {tuple(want[k].shape)}, found {tuple(feats[k].shape)})"
        for k in sorted(set(want) & set(feats))
        if want[k].shape != feats[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path}: not a torchvision vgg16_bn state_dict: missing {missing}, "
            f"unexpected {unexpected}, mis-shaped {shapes}"
        )
    vgg.load_state_dict(feats)
    return vgg.features


class PerceptualLoss(nn.Module):
    """``our_utils.Percep_loss`` (lines 75-127) on given VGG16-bn ``features``.

    Parameters
    ----------
    features : nn.Sequential
        ``vgg16_bn().features`` (torchvision layer indices).
    block_idx : sequence of int
        Which max-pooling blocks to tap (published ``[0, 1, 2]``): block ``i`` taps the
        BatchNorm two layers before the ``i``-th max pooling, read after the in-place ReLU
        that follows it when that ReLU is run (see the module docstring).
    """

    def __init__(self, features: nn.Sequential, block_idx: Sequence[int]) -> None:
        super().__init__()
        bns = [i - 2 for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        if not block_idx or any(not 0 <= b < len(bns) for b in block_idx):
            raise ValueError(f"perceptual_blocks must be in 0..{len(bns) - 1}, got {block_idx!r}")
        last = bns[block_idx[-1]]
        self.features = features[: last + 1]
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.taps = []
        for b in block_idx:
            t = bns[b]
            after = features[t + 1] if t + 1 <= last else None
            self.taps.append(t + 1 if isinstance(after, nn.ReLU) and after.inplace else t)
        self.features.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The VGG stays in eval mode (published: ``vgg.features.eval()``)."""
        super().train(mode)
        self.features.eval()
        return self

    def _taps(self, x: Tensor) -> list[Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x.clone())
        return out

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        loss = inputs.new_zeros(())
        for a, b in zip(self._taps(inputs), self._taps(targets), strict=True):
            loss = loss + ((a - b) ** 2).mean()
        return loss


def sobel_loss(x: Tensor, y: Tensor) -> Tensor:
    """``loss.grad_loss`` (lines 22-62): squared differences of the absolute Sobel gradients."""
    kx = torch.tensor(SOBEL_X, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    ky = torch.tensor(SOBEL_Y, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    x_diff = ((F.conv2d(x, kx).abs() - F.conv2d(y, kx).abs()) ** 2).mean()
    y_diff = ((F.conv2d(x, ky).abs() - F.conv2d(y, ky).abs()) ** 2).mean()
    return x_diff + y_diff


class DilranLoss(nn.Module):
    """``loss_func2`` on the reconstruction of the batch's MRI and PET slices.

    Parameters
    ----------
    lambda1, lambda2 : float
        Weights of the Sobel and the perceptual term.
    perceptual : PerceptualLoss or None
        ``None``: the perceptual term is off (no VGG16-bn weights).
    quantize : bool
        Round the images to ``k / 255`` before the forward (the model's ``quantize_input``).
    """

    def __init__(
        self, lambda1: float, lambda2: float, perceptual: PerceptualLoss | None, quantize: bool
    ) -> None:
        super().__init__()
        self.lambda1, self.lambda2, self.quantize = float(lambda1), float(lambda2), quantize
        self.perceptual = perceptual

    def forward(self, fwd, mri: Tensor, pet: Tensor) -> tuple[Tensor, dict[str, float]]:
        img = torch.cat([mri, pet], dim=0)
        if self.quantize:
            img = quantize_8bit(img)
        out = fwd(img)
        img = img.to(out.dtype)
        mse = ((out - img) ** 2).mean()
        grad = sobel_loss(out, img)
        loss = mse + self.lambda1 * grad
        terms = {"mse": float(mse.detach()), "grad": float(grad.detach())}
        if self.perceptual is not None:
            percep = self.perceptual(out, img)
            loss = loss + self.lambda2 * percep
            terms["percep"] = float(percep.detach())
        return loss, terms


class DilranRecipe(DilranSettings, Recipe):
    """DILRAN (``models.dilran``): see the module docstring; its published settings and their
    checks: :class:`~fusion3d.learned.settings.DilranSettings`."""

    model_class = DILRAN

    def build_loss(self, cfg: Mapping[str, Any], model: nn.Module) -> nn.Module:
        perceptual = None
        if cfg["perceptual_weights"] is not None:
            features = load_vgg16_bn_features(cfg["perceptual_weights"])
            perceptual = PerceptualLoss(features, cfg["perceptual_blocks"])
        quantize = bool(getattr(model, "quantize_input", True))
        return DilranLoss(cfg["lambda1"], cfg["lambda2"], perceptual, quantize)

    def build_scheduler(self, optimizer, cfg):
        """Constant, or with ``lr_decay`` StepLR(lr_step, lr_gamma) per epoch (line 226)."""
        if cfg["lr_decay"]:
            return torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=cfg["lr_step"], gamma=cfg["lr_gamma"]
            )
        return super().build_scheduler(optimizer, cfg)

    def convert_published(self, state, **sizes):
        return convert_dilran(state, **sizes)


DILRAN_RECIPE = DilranRecipe()
