"""MATR (Tang et al., IEEE TIP 2022): the published 2D fusion network, ported.

Published source: tthinking/MATR, ``Networks/net.py`` (``MODEL``) and ``Networks/layers.py``
(the adaptive convolution ``Conv2d``); trained by ``Train.py``, applied by ``Test.py``.
Cited lines below are of those files. Architecture (``MODEL.forward``, net.py:430-452)::

    x = cat(PET, MRI)                         # (B, 2, H, W): channel 0 functional, 1 MRI
    c = convInput(x)                          # adaptive 3x3 conv 2 -> 16, BN, ReLU
    b_k = conv(basicLayer(conv^k(c)))         # k = 1, 2, 3; conv and basicLayer are SHARED
    out = tanh(conv1x1(b_1 + b_2 + b_3))      # 16 -> 1

``conv`` is one adaptive 3x3 conv + BN + ReLU (16 -> 16) called nine times per forward,
``basicLayer`` one stack of three Swin-style blocks (window 1, 8 heads, MLP ratio 4) called
three times. The calls run in the published order, so that BatchNorm's running statistics
in training mode are updated exactly as the published code updates them.

Published behaviour kept as it is (it defines the trained weights):

- the transformer block reads the ``(B, C, H, W)`` memory as ``(B, H, W, C)`` with a raw
  ``view`` (net.py:262) and writes it back the same way (net.py:292): its "tokens" are runs
  of ``C`` consecutive values of the channel-first memory, not pixels. We take the view of
  a contiguous copy, which is the published result for any memory format (channels-last);
- with the published window of 1 every attention is over one token (the softmax is 1); for
  inputs of a size other than ``img_size / patch_size`` the published block adds an all-zero
  mask computed on the fly (net.py:276-279); we do the same;
- ``patch_embed.norm`` (a ``LayerNorm(embed_dim)``, net.py:411-413) is never called in the
  forward pass but is in the published state_dict, so it is kept (unused) for the key map.

Divergences, each a constructor switch (default: the published behaviour):

- ``allow_non_square`` (default ``False``): the adaptive convolution reshapes its output to
  ``sqrt(L) x sqrt(L)`` (layers.py:87), so the published network only runs on square slices.
  ``True`` reshapes to the true ``(H, W)``; square inputs give the same numbers either way.
  With ``False`` a non-square input raises a ValueError naming this switch.
- ``quantize_input`` (default ``True``): not a divergence but our input convention. The
  published pipeline reads 8-bit grey images (PIL ``convert('L')`` + ``ToTensor``,
  Test.py:47-57, Train.py:56-63), so :meth:`MATR.fuse` (and the recipe's loss) round our
  [0, 1] slices to the 256 levels ``k / 255`` after clipping to [0, 1]. ``False`` feeds the
  float slices as they are.
- The published ``Test.py`` writes ``(out * 255).astype(np.uint8)`` (Test.py:68): a
  truncating cast that wraps negative values around. :meth:`MATR.fuse` returns the float
  map before that cast (our contract: unclipped, [0, 1] scale; the caller clips), i.e. no
  output quantisation.

Unused published constructor arguments (``alpha``, ``depth_p``, ``use_checkpoint``,
``bottleneck``, ``downsample``; net.py:399-401) have no effect on the network and are not
arguments here; ``downsample`` is ``None`` in the published model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion3d.learned.models.shared import MATRDropPath, quantize_8bit
from fusion3d.learned.models.swin import (
    Mlp,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

__all__ = [
    "MATR",
    "AdaptiveConv2d",
]


class AdaptiveConv2d(nn.Conv2d):
    """The published adaptive convolution (``Networks/layers.py``, class ``Conv2d``).

    A ``k x k`` kernel ``W`` (``oc, ic, k, k``) is modulated per sample by a sigmoid gate
    ``G = sigmoid(S + M)`` computed from the input's ``k x k`` adaptive average pool:
    ``S`` (``b, 1, ic, k, k``) through ``ce`` -> BN -> ReLU -> ``gd`` (per input channel),
    ``M`` (``b, oc, 1, k, k``) through ``ce`` -> BN -> ReLU -> ``ci`` (grouped channel
    mixing, groups of ``g = 16`` input channels, or all when ``ic < 16``) -> BN -> ReLU ->
    ``gd2``. The output is the unfolded input times ``G * W`` (no bias). Parameter names are
    the published ones (layers.py:10-45). A ``1 x 1`` kernel is a plain convolution
    (layers.py:15-16, 50-52).

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
        As ``nn.Conv2d`` (a square kernel).
    stride, padding, dilation : int
        As ``nn.Conv2d``.
    bias : bool
        As ``nn.Conv2d``; like the published forward, a ``k > 1`` kernel never adds it
        (the published network uses ``False``, net.py:12-19).
    allow_non_square : bool
        Reshape the output to its true ``(H, W)`` instead of the published ``sqrt(L)``
        square (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
        allow_non_square: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, 1, bias)
        self.allow_non_square = bool(allow_non_square)
        self.ind = kernel_size == 1
        if self.ind:
            return
        k = kernel_size
        self.oc, self.ks = out_channels, k
        self.avg_pool = nn.AdaptiveAvgPool2d((k, k))
        self.num_lat = int(k * k / 2 + 1)
        self.ce = nn.Linear(k * k, self.num_lat, False)
        self.ce_bn = nn.BatchNorm1d(in_channels)
        self.ci_bn2 = nn.BatchNorm1d(in_channels)
        self.g = 16 if in_channels // 16 else in_channels
        self.ci = nn.Linear(self.g, out_channels // (in_channels // self.g), bias=False)
        self.ci_bn = nn.BatchNorm1d(out_channels)
        self.gd = nn.Linear(self.num_lat, k * k, False)
        self.gd2 = nn.Linear(self.num_lat, k * k, False)
        self.unfold = nn.Unfold(kernel_size, dilation, padding, stride)

    def _gate(self, x: Tensor) -> Tensor:
        """The per-sample kernel gate ``(b, oc, ic, k, k)`` (layers.py:57-80)."""
        b, c = x.shape[:2]
        k, oc = self.ks, self.oc
        latent = self.ce(self.avg_pool(x).reshape(b, c, -1))  # (b, ic, num_lat)
        spatial = self.gd(F.relu(self.ce_bn(latent)))  # (b, ic, k*k)
        mixed = self.ci_bn2(latent)
        if self.g > 3:  # grouped: (b, ic/g, num_lat, g) -> ci -> back
            mixed = mixed.view(b, c // self.g, self.g, -1).transpose(2, 3)
            mixed = self.ci(F.relu(mixed)).transpose(2, 3).contiguous()
        else:
            mixed = self.ci(F.relu(mixed.transpose(2, 1))).transpose(2, 1).contiguous()
        mixed = self.gd2(F.relu(self.ci_bn(mixed.view(b, oc, -1))))  # (b, oc, k*k)
        return torch.sigmoid(spatial.view(b, 1, c, k, k) + mixed.view(b, oc, 1, k, k))

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial output size of the convolution for an ``h x w`` input."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        (ph, pw), (dh, dw) = self.padding, self.dilation
        return (
            (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
            (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1,
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.ind:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        b = x.shape[0]
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        if ho != wo and not self.allow_non_square:
            raise ValueError(
                f"MATR's adaptive convolution reshapes its output to a square (published "
                f"layers.py:87); got a {x.shape[2]} x {x.shape[3]} input. Use square slices "
                f"or allow_non_square=True (fusion3d fuse --set allow_non_square=true)"
            )
        kernel = (self._gate(x) * self.weight.unsqueeze(0)).view(b, self.oc, -1)
        out = torch.matmul(kernel, self.unfold(x))  # (b, oc, L); the published drops any bias
        return out.view(b, self.oc, ho, wo)


class ConvBNReLU(nn.Module):
    """``Basic3x3`` (net.py:21-34): adaptive ``k x k`` conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, allow_non_square: bool) -> None:
        super().__init__()
        self.conv1 = AdaptiveConv2d(
            cin,
            cout,
            kernel_size,
            padding=kernel_size // 2,
            bias=False,
            allow_non_square=allow_non_square,
        )
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class Conv1x1Tanh(nn.Module):
    """``Basic1x1`` (net.py:36-46): ``1 x 1`` conv (no bias) -> tanh."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.conv1(x))


class WindowAttention(nn.Module):
    """Window self-attention with a relative position bias (net.py:82-145).

    Parameters
    ----------
    dim : int
        Token channels.
    window_size : int
        Window edge (published 1).
    num_heads : int
        Heads (published 8).
    qkv_bias : bool
        Bias of the q, k, v projection (published ``True``).
    qk_scale : float or None
        Attention scale; ``None`` -> ``head_dim ** -0.5`` (net.py:91).
    attn_drop, proj_drop : float
        Dropout rates (published 0).
    """

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool,
        qk_scale: float | None,
        attn_drop: float,
        proj_drop: float,
    ) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        n_rel = (2 * window_size - 1) ** 2
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n_rel, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        bw, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


class TransformerBlock(nn.Module):
    """The published Swin-style block (net.py:200-295), on a ``(B, C, H, W)`` tensor.

    ``x`` is read as ``(B, H, W, C)`` by a raw view (published; see the module docstring),
    then ``x + attn(norm1(x))`` over windows and ``x + mlp(norm2(x))``, and viewed back.

    Parameters
    ----------
    dim : int
        Channels.
    input_resolution : tuple of int
        The resolution the block was built for (``img_size // patch_size``); a window not
        smaller than it becomes the whole resolution without shift (net.py:213-215).
    num_heads, window_size, shift_size : int
        Heads, window edge, cyclic shift (published 8, 1, 0).
    mlp_ratio : float
        MLP hidden width / ``dim`` (published 4).
    qkv_bias, qk_scale, drop, attn_drop, drop_path
        As published (``True``, ``None``, 0, 0, 0).
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.input_resolution = tuple(int(r) for r in input_resolution)
        if min(self.input_resolution) <= window_size:
            window_size, shift_size = min(self.input_resolution), 0
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size {window_size})")
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, proj_drop=drop
        )
        self.drop_path = MATRDropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        mask = None
        if shift_size > 0:
            mask = shifted_window_mask(*self.input_resolution, window_size, shift_size)
        self.register_buffer("attn_mask", mask)

    def _mask(self, x_size: tuple[int, int], device: torch.device) -> Tensor | None:
        """The stored mask at the build resolution, else one computed for ``x_size``."""
        if self.input_resolution == tuple(x_size):
            return self.attn_mask
        return shifted_window_mask(*x_size, self.window_size, self.shift_size).to(device)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        b, c, h, w = x.shape
        ws, shift = self.window_size, self.shift_size
        x = x.contiguous().view(b, h, w, c)  # published raw view (net.py:262)
        shortcut = x
        x = self.norm1(x.reshape(h * w * b, c)).view(b, h, w, c)
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, ws).view(-1, ws * ws, c)
        windows = self.attn(windows, mask=self._mask(x_size, x.device))
        x = window_reverse(windows.view(-1, ws, ws, c), ws, h, w)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.contiguous().view(b, c, h, w)  # published raw view back (net.py:292)


class BasicLayer(nn.Module):
    """``depth`` blocks, every second one shifted by ``window_size // 2`` (net.py:351-385)."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                input_resolution,
                num_heads,
                window_size,
                0 if i % 2 == 0 else window_size // 2,
                mlp_ratio,
                qkv_bias,
                qk_scale,
                drop,
                attn_drop,
                drop_path,
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        for blk in self.blocks:
            x = blk(x, x_size)
        return x


class PatchNorm(nn.Module):
    """Holder of the published ``patch_embed.norm`` (net.py:317-342): in the state_dict only.

    The published ``PatchEmbed`` is built but never called by ``MODEL.forward``; its
    ``LayerNorm(embed_dim)`` is kept so that published weights load with identity keys.
    """

    def __init__(self, embed_dim: int, patch_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None


#: Constructor arguments of :class:`MATR` and their JSON types (``float | None``: qk_scale).
_ARG_TYPES: dict[str, type | tuple] = {
    "img_size": int,
    "patch_size": int,
    "embed_dim": int,
    "num_heads": int,
    "window_size": int,
    "in_channel": int,
    "out_channel": int,
    "output_channel": int,
    "mlp_ratio": float,
    "qkv_bias": bool,
    "qk_scale": (float, type(None)),
    "drop": float,
    "attn_drop": float,
    "drop_path": float,
    "patch_norm": bool,
    "depth": int,
    "kernel_size": int,
    "allow_non_square": bool,
    "quantize_input": bool,
}


def _resolve_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments as plain JSON values; ValueError names a wrongly typed one."""
    out: dict[str, Any] = {}
    for key, kind in _ARG_TYPES.items():
        v = args[key]
        if kind is bool or kind is int:
            ok = (
                isinstance(v, bool)
                if kind is bool
                else isinstance(v, int) and not isinstance(v, bool)
            )
        else:
            ok = (
                v is None
                and key == "qk_scale"
                or (isinstance(v, int | float) and not isinstance(v, bool))
            )
        if not ok:
            want = {bool: "true or false", int: "an integer"}.get(kind, "a number")
            raise ValueError(f"MATR: argument {key!r} must be {want}, got {v!r}")
        out[key] = float(v) if v is not None and kind not in (bool, int) else v
    return out


class MATR(nn.Module):
    """The published MATR network (``MODEL`` of net.py:398-452); see the module docstring.

    Parameters
    ----------
    img_size : int
        Build resolution of the transformer blocks is ``img_size // patch_size``
        (net.py:399, 411-416; published 120). It only decides whether a block uses its
        stored mask or computes one (equal results) and caps the window.
    patch_size : int
        Published 4 (net.py:399); see ``img_size``.
    embed_dim : int
        Width of the unused ``patch_embed.norm`` (net.py:399, 411-413; published 96).
    num_heads : int
        Attention heads (net.py:399; published 8).
    window_size : int
        Attention window edge (net.py:399; published 1).
    in_channel : int
        Input channels: functional image, MRI (net.py:399; ``net(in_channel=2)`` in
        Train.py:185 and Test.py:18).
    out_channel : int
        Feature channels of the convolutions and transformer (net.py:399; published 16).
    output_channel : int
        Output channels (net.py:399; published 1).
    mlp_ratio : float
        MLP hidden width / channels (net.py:400; published 4).
    qkv_bias : bool
        Bias of the q, k, v projection (net.py:400; published ``True``).
    qk_scale : float or None
        Attention scale, ``None`` -> ``head_dim ** -0.5`` (net.py:400, 91).
    drop, attn_drop, drop_path : float
        Dropout rates and stochastic depth (net.py:400-401; published 0).
    patch_norm : bool
        Whether ``patch_embed.norm`` exists (net.py:400; published ``True``).
    depth : int
        Transformer blocks in ``basicLayer`` (net.py:400; published 3).
    kernel_size : int
        Kernel of the adaptive convolutions (``conv3x3``, net.py:10-13; published 3,
        padding ``kernel_size // 2``).
    allow_non_square : bool
        Divergence switch (default ``False`` = published): see the module docstring.
    quantize_input : bool
        Round inputs to 8-bit levels in :meth:`fuse` and the recipe's loss (default
        ``True``, the published 8-bit image pipeline).

    Attributes
    ----------
    spatial_dims : int
        2: a slice-wise network.
    size_divisor : int
        Input H and W must be multiples of it (the transformer window; 1 as published).
    init_args : dict
        ``MATR(**model.init_args)`` rebuilds the same network.
    inference_keys : tuple of str
        Constructor arguments that change how :meth:`fuse` runs but not the weights
        (``fusion3d fuse --set KEY=VALUE`` may change them for a checkpoint).
    """

    spatial_dims = 2
    inference_keys = ("allow_non_square", "quantize_input")

    def __init__(
        self,
        img_size: int = 120,
        patch_size: int = 4,
        embed_dim: int = 96,
        num_heads: int = 8,
        window_size: int = 1,
        in_channel: int = 2,
        out_channel: int = 16,
        output_channel: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        patch_norm: bool = True,
        depth: int = 3,
        kernel_size: int = 3,
        allow_non_square: bool = False,
        quantize_input: bool = True,
    ) -> None:
        super().__init__()
        args = dict(locals())
        self._init_args = _resolve_args({k: args[k] for k in _ARG_TYPES})
        self.quantize_input = bool(quantize_input)
        self.in_channel = int(in_channel)
        # construction order = the published one (same random init for the same seed)
        self.convInput = ConvBNReLU(in_channel, out_channel, kernel_size, allow_non_square)
        self.conv = ConvBNReLU(out_channel, out_channel, kernel_size, allow_non_square)
        self.convolutional_out = Conv1x1Tanh(out_channel, output_channel)
        self.patch_embed = PatchNorm(embed_dim, patch_norm)
        res = (img_size // patch_size, img_size // patch_size)
        self.basicLayer = BasicLayer(
            out_channel,
            res,
            depth,
            num_heads,
            window_size,
            mlp_ratio,
            qkv_bias,
            qk_scale,
            drop,
            attn_drop,
            drop_path,
        )

    @property
    def init_args(self) -> dict[str, Any]:
        """Every constructor argument, resolved (a fresh copy of plain JSON-able values)."""
        return dict(self._init_args)

    @property
    def size_divisor(self) -> int:
        """H and W of a slice must be multiples of the blocks' window (1 as published)."""
        blocks = self.basicLayer.blocks
        return int(blocks[0].window_size) if len(blocks) else 1

    def forward_input(self, x: Tensor) -> Tensor:
        """The published ``MODEL.forward`` on the stacked input ``(B, in_channel, H, W)``.

        The shared modules are called in the published order (net.py:432-451): nine calls
        of ``conv`` and three of ``basicLayer`` per forward pass.
        """
        first = self.convInput(x)
        total = None
        for n_convs in (1, 2, 3):
            y = first
            for _ in range(n_convs):
                y = self.conv(y)
            y = self.conv(self.basicLayer(y, (y.shape[2], y.shape[3])))
            total = y if total is None else total + y
        return self.convolutional_out(total)

    def check_input(self, mri: Tensor, pet: Tensor) -> None:
        """Raise ValueError unless both are ``(B, 1, H, W)`` of one shape fitting the net."""
        for name, t in (("mri", mri), ("pet", pet)):
            if t.ndim != 4 or t.shape[1] != 1:
                raise ValueError(f"MATR: {name} must be (B, 1, H, W), got {tuple(t.shape)}")
        if mri.shape != pet.shape:
            raise ValueError(f"MATR: mri {tuple(mri.shape)} and pet {tuple(pet.shape)} differ")
        if self.in_channel != 2:
            raise ValueError(f"MATR: fusing two slices needs in_channel=2, not {self.in_channel}")
        d = self.size_divisor
        if mri.shape[2] % d or mri.shape[3] % d:
            raise ValueError(f"MATR: H and W {tuple(mri.shape[2:])} must be multiples of {d}")

    def forward(self, mri: Tensor, pet: Tensor) -> Tensor:
        """The published training forward: ``MODEL(cat(PET, MRI))`` (Train.py:65, 115).

        Parameters
        ----------
        mri, pet : Tensor
            ``(B, 1, H, W)`` slices (already on the input convention; see :meth:`prepare`).

        Returns
        -------
        Tensor
            ``(B, 1, H, W)``, the tanh output (the published [0, 1] image scale).
        """
        self.check_input(mri, pet)
        return self.forward_input(torch.cat((pet, mri), dim=1))

    def prepare(self, x: Tensor) -> Tensor:
        """The published input convention: 8-bit levels with ``quantize_input``, else ``x``."""
        return quantize_8bit(x) if self.quantize_input else x

    def fuse(self, mri: Tensor, pet: Tensor) -> Tensor:
        """The published inference (Test.py:47-67) on a batch of slice pairs.

        Inputs rounded to 8-bit levels (``quantize_input``), channel 0 = PET, channel 1 =
        MRI, the network in eval mode (BatchNorm running statistics; the module's mode is
        restored afterwards). No fusion rule: the network outputs the fused image.

        Parameters
        ----------
        mri, pet : Tensor
            ``(B, 1, H, W)`` on the [0, 1] scale.

        Returns
        -------
        Tensor
            ``(B, 1, H, W)`` on the [0, 1] scale, not clipped (Test.py then writes
            ``uint8(255 * out)``).
        """
        was_training = self.training
        self.eval()
        try:
            return self(self.prepare(mri), self.prepare(pet))
        finally:
            self.train(was_training)
