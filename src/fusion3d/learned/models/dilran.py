"""DILRAN: the published 2D auto-encoder fusion network (simonZhou86/dilran), ported.

Published source (Zhou, Xu, Zhang, "An attention-based multi-scale feature learning
network for multimodal medical image fusion", arXiv 2212.04661; github simonZhou86/dilran):

- ``model_v5.py``: the network. The shipped weights ``pretrained/last.pt`` are a
  ``model_v5.fullModel`` state_dict (every key and shape matches; ``model.py`` does not),
  and ``inference.py`` imports ``models.model_v5``;
- ``inference.py``: the test path: each source slice (one at a time, ``(1, 1, 256, 256)``)
  goes through ``model.fe``, the two feature maps are fused by
  ``our_utils.fusion_strategy(ct_fe, mri_fe, device, "SFNN")``, then ``model.recon``;
- ``dataset_loader.py``: 8-bit PNGs divided by 255 (lines 83-84), 256 x 256, one channel.

Architecture (``model_v5.py``; ``C`` = ``channels``)::

    fe (MSFuNet, lines 141-178):
        t = conv1(x)                          1x1 conv 1 -> C
        x = x + relu(up(avgpool(x))) * t      pixel attention on the input (broadcast to C)
        d = fe(x)                             FE_V1, lines 89-124:
              cat(convd1(x), convd2(x), convd3(x))   3x3 convs, dilation 1, 3, 5
              -> reduce (1x1, 3C -> C) -> bnorm1
              -> dilran (DILRAN_V1, lines 52-86: y + relu(up(avgpool(y))) * (c1 + c2 + c3),
                 c1 = conv_d(y), c2 = conv_d(c1), c3 = conv_d(c2))
              -> bnorm1 (the same BatchNorm again)
        return relu(up(avgpool(x))) * d + x
    recon (Recon, lines 189-215): conv3x3 C -> 64 -> 32 -> 1, no activation

``up(avgpool(.))`` (2x2 average pooling, nearest 2x upsampling) needs even H and W:
:attr:`DILRAN.size_divisor` is 2 (the published code does not pad; its slices are 256^2).

Fusion rule (``our_utils.py`` lines 190-218, ``"SFNN"``): per slice, ``s_k = softmax(f_k)``
over the channels (``nn.functional.softmax`` without ``dim`` on a 4-D tensor picks dim 1),
``n_k = max_c ||s_k[c]||_*`` (nuclear norm of each channel's H x W map), and
``F = w1 f1 + w2 f2`` with ``w_k = n_k^2 / (n_1^2 + n_2^2)``; no epsilon (the softmax makes
every norm positive). :func:`sfnn_fusion` implements it for a batch (one pair of weights
per slice).

Input conventions of the published test path, applied inside :meth:`DILRAN.fuse`: grey
images on [0, 1] quantised to 8 bits (``k / 255``: the published tensors come from 8-bit
PNGs, ``quantize_input``); the first source of ``fusion_strategy`` is the CT (here: the
PET), the second the MRI (the rule is symmetric, so the order does not change the result);
no padding.

Divergences and conventions, each a constructor switch (default = the published code):

- ``inference_norm="slice"``: ``inference.py`` (and ``val.py``) never call ``model.eval()``,
  so its BatchNorms normalise every slice with that slice's own statistics (batch of one).
  :meth:`DILRAN.fuse` does the same for a whole batch, slice by slice, whatever the module's
  train/eval mode and without touching the running statistics (the published call updates
  them as a side effect that never reaches an output). ``"running"``: the running
  statistics (eval-mode BatchNorm); ``"module"``: follow ``self.training``.
- ``keep_unused_layers=True``: ``MSFuNet`` builds ``conv_id``, ``conv2`` and ``bnorm`` and
  ``DILRAN_V1`` builds ``bnorm``, which no forward uses; they are kept so that published
  state_dicts load with the identity key map (and a seeded construction draws the same
  initial weights as the published one). Their parameters are frozen
  (``requires_grad=False``): the published Adam never updates them either (their gradients
  stay ``None``), and DistributedDataParallel rejects parameters that get no gradient.
  ``False`` drops them.
- ``quantize_input=True``: ``fuse`` (and the recipe's loss) round the [0, 1] inputs to
  ``k / 255`` like the published 8-bit data; ``False`` feeds them as they are.

Not a divergence: ``DILRAN_V1`` computes ``conv_d(conv_d(x))`` twice and
``conv_d(x)`` three times; this port computes each once and reuses it (the same values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion3d.learned.models.shared import quantize_8bit

__all__ = [
    "INFERENCE_NORMS",
    "PUBLISHED_SIZES",
    "DILRAN",
    "sfnn_fusion",
]

#: BatchNorm behaviour of :meth:`DILRAN.fuse` (see the module docstring).
INFERENCE_NORMS = ("slice", "running", "module")

#: Published sizes (``model_v5.py``): feature channels (lines 62, 97-104, 149-165), the
#: dilations of FE_V1's three convs (lines 97-99), the 3x3 kernels (lines 62, 97-99,
#: 207-211) and the reconstruction widths before the 1-channel output (lines 207-211).
PUBLISHED_SIZES: dict[str, Any] = {
    "channels": 64,
    "dilations": [1, 3, 5],
    "kernel_size": 3,
    "recon_channels": [64, 32],
}

#: Keys (below ``fe.``) of the layers the published forward never uses.
DILRAN_UNUSED_PREFIXES = ("fe.conv_id.", "fe.conv2.", "fe.bnorm.", "fe.fe.dilran.bnorm.")


def _pool_gate(x: Tensor) -> Tensor:
    """``relu(up(avgpool(x)))``: 2x2 average pooling, nearest 2x upsampling, ReLU."""
    return F.relu(F.interpolate(F.avg_pool2d(x, 2, 2), scale_factor=2.0, mode="nearest"))


def _norm(bn: nn.BatchNorm2d, x: Tensor, mode: str) -> Tensor:
    """BatchNorm ``bn`` on ``x``: as a module (``"module"``), with the running statistics
    (``"running"``), or with each slice's own statistics (``"slice"``, no update)."""
    if mode == "module":
        return bn(x)
    if mode == "running":
        return F.batch_norm(
            x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
        )
    return F.instance_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)


def _frozen(module: nn.Module) -> nn.Module:
    """``module`` with every parameter ``requires_grad=False`` (a published unused layer)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _conv(c_in: int, c_out: int, k: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=1, padding="same", dilation=dilation)


class _DilatedResidualAttention(nn.Module):
    """``DILRAN_V1`` (``model_v5.py`` lines 52-86): ``y + relu(up(pool(y))) * (c1+c2+c3)``."""

    def __init__(self, channels: int, kernel_size: int, keep_unused: bool) -> None:
        super().__init__()
        self.conv_d = _conv(channels, channels, kernel_size)
        if keep_unused:  # built (line 63), never used
            self.bnorm = _frozen(nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        c1 = self.conv_d(x)
        c2 = self.conv_d(c1)
        c3 = self.conv_d(c2)
        return x + _pool_gate(x) * (c1 + c2 + c3)


class _MultiScaleExtractor(nn.Module):
    """``FE_V1`` (``model_v5.py`` lines 89-124): dilated convs, reduce, BN, DILRAN, BN."""

    def __init__(
        self, channels: int, kernel_size: int, dilations: Sequence[int], keep_unused: bool
    ) -> None:
        super().__init__()
        for i, d in enumerate(dilations, start=1):
            self.add_module(f"convd{i}", _conv(channels, channels, kernel_size, d))
        self.n_dil = len(dilations)
        self.reduce = _conv(channels * self.n_dil, channels, 1)
        self.bnorm1 = nn.BatchNorm2d(channels)
        self.dilran = _DilatedResidualAttention(channels, kernel_size, keep_unused)

    def forward(self, x: Tensor, norm: str = "module") -> Tensor:
        branches = [getattr(self, f"convd{i}")(x) for i in range(1, self.n_dil + 1)]
        y = _norm(self.bnorm1, self.reduce(torch.cat(branches, dim=1)), norm)
        return _norm(self.bnorm1, self.dilran(y), norm)


class _Encoder(nn.Module):
    """``MSFuNet`` (``model_v5.py`` lines 141-178): the feature extractor ``model.fe``."""

    def __init__(
        self, channels: int, kernel_size: int, dilations: Sequence[int], keep_unused: bool
    ) -> None:
        super().__init__()
        c = channels
        if keep_unused:  # built in this order (lines 149-163), never used
            self.conv_id = _frozen(nn.Sequential(_conv(c * 3, c, 1)))
        self.conv1 = _conv(1, c, 1)
        if keep_unused:
            self.conv2 = _frozen(
                nn.Sequential(
                    _conv(c, c, 3), nn.BatchNorm2d(c), nn.ReLU(), _conv(c, c, 3), nn.BatchNorm2d(c)
                )
            )
            self.bnorm = _frozen(nn.BatchNorm2d(c))
        self.fe = _MultiScaleExtractor(c, kernel_size, dilations, keep_unused)

    def forward(self, x: Tensor, norm: str = "module") -> Tensor:
        x = x + _pool_gate(x) * self.conv1(x)
        deep = self.fe(x, norm)
        return _pool_gate(x) * deep + x


class _Decoder(nn.Module):
    """``Recon`` version 2 (``model_v5.py`` lines 206-215): 3x3 convs, no activation."""

    def __init__(self, channels: int, widths: Sequence[int], kernel_size: int) -> None:
        super().__init__()
        sizes = [channels, *widths, 1]
        self.recon_conv = nn.Sequential(
            *[_conv(a, b, kernel_size) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.recon_conv(x)


def sfnn_fusion(f1: Tensor, f2: Tensor) -> Tensor:
    """The published ``"SFNN"`` rule (``our_utils.py`` lines 190-218), per slice.

    Parameters
    ----------
    f1, f2 : Tensor
        Feature maps ``(B, C, H, W)`` of the two sources (published: CT first, MRI second).

    Returns
    -------
    Tensor
        ``w1 f1 + w2 f2`` with, per slice, ``w_k = n_k^2 / (n_1^2 + n_2^2)`` and
        ``n_k = max_c ||softmax_C(f_k)[c]||_*``; the weights are formed in float64 (the
        published code takes ``.item()`` of each norm and works in NumPy) and cast to the
        features' dtype.
    """
    if f1.shape != f2.shape or f1.ndim != 4:
        raise ValueError(f"sfnn_fusion needs two (B, C, H, W) maps, got {f1.shape}, {f2.shape}")
    n1 = torch.linalg.matrix_norm(F.softmax(f1, dim=1), ord="nuc").amax(dim=1).double() ** 2
    n2 = torch.linalg.matrix_norm(F.softmax(f2, dim=1), ord="nuc").amax(dim=1).double() ** 2
    w1 = (n1 / (n1 + n2)).to(f1.dtype).view(-1, 1, 1, 1)
    w2 = (n2 / (n1 + n2)).to(f1.dtype).view(-1, 1, 1, 1)
    return w1 * f1 + w2 * f2


class DILRAN(nn.Module):
    """The published DILRAN auto-encoder (``model_v5.fullModel``) and its SFNN fusion.

    Parameters
    ----------
    channels : int
        Feature channels ``C`` (published 64, ``model_v5.py`` lines 62, 97-104, 149-165).
    dilations : sequence of int
        Dilations of the multi-scale convs (published ``[1, 3, 5]``, lines 97-99).
    kernel_size : int
        Kernel of the 3x3 convs (published 3, lines 62, 97-99, 207-211); odd.
    recon_channels : sequence of int
        Widths of the reconstruction convs before the 1-channel output (published
        ``[64, 32]``, lines 207-211).
    keep_unused_layers : bool
        Keep the published layers no forward uses (frozen); see the module docstring.
    inference_norm : {"slice", "running", "module"}
        BatchNorm statistics in :meth:`fuse` (published: ``"slice"``).
    quantize_input : bool
        Round inputs to the 8-bit grid in :meth:`fuse` (published data: 8-bit PNGs / 255).

    Attributes
    ----------
    spatial_dims : int
        2: the network works on slices ``(B, 1, H, W)``.
    size_divisor : int
        2: H and W must be even (2x2 pooling followed by 2x upsampling).
    init_args : dict
        The resolved constructor arguments; ``DILRAN(**model.init_args)`` rebuilds it.
    inference_keys : tuple of str
        Constructor arguments that change how :meth:`fuse` runs but not the weights
        (``fusion3d fuse --set KEY=VALUE`` may change them for a checkpoint).
    """

    spatial_dims = 2
    size_divisor = 2
    inference_keys = ("inference_norm", "quantize_input")

    def __init__(
        self,
        channels: int = PUBLISHED_SIZES["channels"],
        dilations: Sequence[int] = tuple(PUBLISHED_SIZES["dilations"]),
        kernel_size: int = PUBLISHED_SIZES["kernel_size"],
        recon_channels: Sequence[int] = tuple(PUBLISHED_SIZES["recon_channels"]),
        keep_unused_layers: bool = True,
        inference_norm: str = "slice",
        quantize_input: bool = True,
    ) -> None:
        super().__init__()
        self._init_args = _check_args(
            channels, dilations, kernel_size, recon_channels, keep_unused_layers,
            inference_norm, quantize_input,
        )  # fmt: skip
        a = self._init_args
        self.inference_norm = a["inference_norm"]
        self.quantize_input = a["quantize_input"]
        self.fe = _Encoder(a["channels"], a["kernel_size"], a["dilations"], keep_unused_layers)
        self.recon = _Decoder(a["channels"], a["recon_channels"], a["kernel_size"])

    @property
    def init_args(self) -> dict:
        """The resolved constructor arguments (plain JSON values)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._init_args.items()}

    def _check_input(self, x: Tensor, name: str) -> None:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"DILRAN: {name} must be (B, 1, H, W), got {tuple(x.shape)}")
        if any(s % self.size_divisor for s in x.shape[2:]):
            raise ValueError(
                f"DILRAN: {name} size {tuple(x.shape[2:])} must be divisible by "
                f"{self.size_divisor} (2x2 pooling then 2x upsampling)"
            )

    def forward(self, x: Tensor) -> Tensor:
        """The published training forward ``recon(fe(x))``: reconstruct ``x`` ``(B, 1, H, W)``."""
        self._check_input(x, "x")
        return self.recon(self.fe(x))

    def fuse(self, mri: Tensor, pet: Tensor) -> Tensor:
        """The published inference path on a batch of slice pairs.

        Parameters
        ----------
        mri, pet : Tensor
            ``(B, 1, H, W)`` on the [0, 1] scale, H and W even.

        Returns
        -------
        Tensor
            ``recon(SFNN(fe(pet), fe(mri)))`` ``(B, 1, H, W)``, on the [0, 1] scale, not
            clipped (the published code clips to [0, 1] afterwards).
        """
        self._check_input(mri, "mri")
        self._check_input(pet, "pet")
        if mri.shape != pet.shape:
            raise ValueError(f"DILRAN.fuse: mri {tuple(mri.shape)} != pet {tuple(pet.shape)}")
        if self.quantize_input:
            mri, pet = quantize_8bit(mri), quantize_8bit(pet)
        f_pet = self.fe(pet, self.inference_norm)  # published: ct_fe = model.fe(ct_slice)
        f_mri = self.fe(mri, self.inference_norm)
        return self.recon(sfnn_fusion(f_pet, f_mri))


def _check_args(
    channels, dilations, kernel_size, recon_channels, keep_unused, inference_norm, quantize
) -> dict[str, Any]:
    """The constructor arguments as plain values; ValueError names a bad one."""

    def positive_int(name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"DILRAN: {name} must be a positive integer, got {v!r}")
        return int(v)

    for name, v in (("dilations", dilations), ("recon_channels", recon_channels)):
        if isinstance(v, str | bytes) or not isinstance(v, Sequence) or not v:
            raise ValueError(f"DILRAN: {name} must be a non-empty list of integers, got {v!r}")
    k = positive_int("kernel_size", kernel_size)
    if k % 2 == 0:
        raise ValueError(f"DILRAN: kernel_size must be odd ('same' padding), got {k}")
    if inference_norm not in INFERENCE_NORMS:
        raise ValueError(f"DILRAN: inference_norm must be one of {INFERENCE_NORMS}")
    for name, v in (("keep_unused_layers", keep_unused), ("quantize_input", quantize)):
        if not isinstance(v, bool):
            raise ValueError(f"DILRAN: {name} must be true or false, got {v!r}")
    return {
        "channels": positive_int("channels", channels),
        "dilations": [positive_int("dilations", d) for d in dilations],
        "kernel_size": k,
        "recon_channels": [positive_int("recon_channels", c) for c in recon_channels],
        "keep_unused_layers": keep_unused,
        "inference_norm": inference_norm,
        "quantize_input": quantize,
    }
