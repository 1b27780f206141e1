"""Building blocks of the DC2Fusion network: window partition, deformable sampling, DCFB block.

Conventions: feature maps travel between blocks *channels-last*, ``(B, *S, C)`` with
``S = (D, H, W)`` in 3D and ``(H, W)`` in 2D; convolutions see *channels-first*
``(B, C, *S)``. Every module works for ``spatial_dims`` 2 and 3.

Where the published DC2Fusion code is defective we implement the stated intent;
each divergence is marked ``DIVERGENCE`` below and has a switch whose other value
reproduces the published behaviour (``DC2Fusion(variant="published")`` sets them all).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion3d.learned.models.shared import DCFBDropPath

__all__ = [
    "DCFBBlock",
    "DeformableSampler",
    "conv_nd",
    "conv_transpose_nd",
    "reference_grid",
    "window_partition",
    "window_reverse",
]


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """Return ``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def conv_transpose_nd(spatial_dims: int) -> type[nn.Module]:
    """Return ``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]


def batch_norm_nd(spatial_dims: int) -> type[nn.Module]:
    """Return ``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """Cut a channels-last map into non-overlapping windows, without Python loops.

    Parameters
    ----------
    x : Tensor
        ``(B, *S, C)``; every spatial size divisible by ``window_size``.
    window_size : int
        Window edge ``w`` (tokens per window ``w ** len(S)``).

    Returns
    -------
    Tensor
        ``(B * nW, w ** nd, C)`` with windows in row-major order of their grid position.
    """
    b, *spatial, c = x.shape
    nd = len(spatial)
    w = window_size
    # (B, S0/w, w, S1/w, w, [S2/w, w,] C)
    shape = [b]
    for s in spatial:
        shape += [s // w, w]
    x = x.reshape(*shape, c)
    # -> (B, S0/w, S1/w, [S2/w,] w, w, [w,] C): window-grid axes first, then in-window axes
    perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [1 + 2 * nd]
    return x.permute(*perm).reshape(-1, w**nd, c)


def window_reverse(
    windows: Tensor, window_size: int, batch: int, spatial: tuple[int, ...]
) -> Tensor:
    """Inverse of :func:`window_partition`.

    Parameters
    ----------
    windows : Tensor
        ``(B * nW, w ** nd, C)``.
    window_size : int
        Window edge ``w``.
    batch : int
        ``B``.
    spatial : tuple of int
        ``S`` of the map to rebuild.

    Returns
    -------
    Tensor
        ``(B, *S, C)``.
    """
    nd = len(spatial)
    w = window_size
    c = windows.shape[-1]
    # (B, S0/w, S1/w, [S2/w,] w, w, [w,] C)
    x = windows.reshape(batch, *[s // w for s in spatial], *([w] * nd), c)
    # -> (B, S0/w, w, S1/w, w, [S2/w, w,] C)
    perm = [0]
    for i in range(nd):
        perm += [1 + i, 1 + nd + i]
    perm.append(1 + 2 * nd)
    return x.permute(*perm).reshape(batch, *spatial, c)


def reference_grid(
    spatial: tuple[int, ...], device=None, dtype=None, convention: str = "aligned"
) -> Tensor:
    """Reference (zero-offset) sampling grid for ``grid_sample(..., align_corners=True)``.

    ``convention="aligned"``: voxel ``i`` of an axis of size ``n`` sits at
    ``-1 + 2 i / (n - 1)`` (0 when ``n == 1``), so a zero offset returns the input.

    DIVERGENCE (published defect 4): ``convention="published"`` reproduces the published
    grid: half-voxel centres ``-1 + 2 (i + 0.5) / m`` (the ``align_corners=False``
    convention, while sampling with ``align_corners=True``) where ``m`` is the size of
    the NEXT axis, cyclically: the D coordinate is divided by H, H by W and W by D
    (``_get_ref_points`` divides ``ref[..., 0]`` by H, ``[..., 1]`` by W, ``[..., 2]`` by
    D). In 2D, H by W and W by H. A zero offset then does not return the input.

    Returns
    -------
    Tensor
        ``(*S, nd)`` with the last axis in grid_sample's order ``(x, y[, z]) = (W, H[, D])``.
    """
    if convention == "aligned":
        axes = [
            torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)
            if n > 1
            else torch.zeros(1, device=device, dtype=dtype)
            for n in spatial
        ]
    elif convention == "published":
        nd = len(spatial)
        axes = [
            (torch.arange(n, device=device, dtype=dtype) + 0.5) / spatial[(a + 1) % nd] * 2 - 1
            for a, n in enumerate(spatial)
        ]
    else:
        raise ValueError(
            f"reference grid convention must be 'aligned' or 'published', got {convention!r}"
        )
    mesh = torch.meshgrid(*axes, indexing="ij")  # nd tensors of shape S, order (D, H, W)
    return torch.stack(mesh[::-1], dim=-1)  # (*S, nd) in (W, H, D) order


def _at_least_fp32(t: Tensor) -> Tensor:
    """``t`` in float32 when it is a half-precision float (bf16, fp16); else unchanged."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class DeformableSampler(nn.Module):
    """Predict one bounded offset per voxel from both streams and resample the other stream.

    concat[x, y] -> 1x1 (2C -> 2C) -> depthwise k3 -> LN -> GELU -> 1x1 (2C -> nd, no bias)
    -> tanh * largest offset -> ``grid_sample`` of ``y`` at reference + offset.

    Parameters
    ----------
    dim : int
        Channels ``C`` of each stream.
    spatial_dims : int
        2 or 3.
    max_offset : float
        Largest offset in voxels (``offset_scale="voxel"``).
    reference_grid : {"aligned", "published"}
        Zero-offset grid, see :func:`reference_grid`.
    offset_scale : {"voxel", "published"}
        ``"voxel"``: the largest offset is ``max_offset`` voxels along every axis.
        DIVERGENCE: ``"published"`` scales ``tanh`` by ``2 / n`` normalised units
        (``offset_range_factor`` 2 times ``1 / n``), i.e. ``max_offset * (n - 1) / n`` voxels
        on an axis of ``n`` voxels under ``align_corners=True``.
    padding : {"border", "zeros"}
        ``grid_sample`` padding. DIVERGENCE: the published code uses grid_sample's default
        ``"zeros"``, which darkens samples that leave the map; we repeat the border.

    Under autocast the last offset layer, the grid and ``grid_sample`` run in float32
    (bf16 cannot resolve a voxel of a 64-voxel axis near the edge of [-1, 1]); the
    sampled map is cast back to the dtype of ``y``.
    """

    def __init__(
        self,
        dim: int,
        spatial_dims: int,
        max_offset: float = 1.0,
        *,
        reference_grid: str = "aligned",
        offset_scale: str = "voxel",
        padding: str = "border",
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("reference_grid", reference_grid, ("aligned", "published")),
            ("offset_scale", offset_scale, ("voxel", "published")),
            ("padding", padding, ("border", "zeros")),
        ):
            if value not in allowed:
                raise ValueError(
                    f"DeformableSampler: {name} must be one of {allowed}, got {value!r}"
                )
        self.spatial_dims = spatial_dims
        self.max_offset = float(max_offset)
        self.reference_grid = reference_grid
        self.offset_scale = offset_scale
        self.padding = padding
        self.proj_in = nn.Linear(2 * dim, 2 * dim)  # a 1x1 conv on channels-last tokens
        self.dwconv = conv_nd(spatial_dims)(2 * dim, 2 * dim, 3, padding=1, groups=2 * dim)
        self.norm = nn.LayerNorm(2 * dim)
        self.act = nn.GELU()
        self.offset = nn.Linear(2 * dim, spatial_dims, bias=False)

    def largest_offset(self, spatial: tuple[int, ...]) -> list[float]:
        """Largest offset in voxels along each axis of a map of size ``spatial``."""
        if self.offset_scale == "voxel":
            return [self.max_offset] * len(spatial)
        return [self.max_offset * (n - 1) / n for n in spatial]

    def offsets(self, x: Tensor, y: Tensor) -> Tensor:
        """Offsets in voxels, float32 (also under autocast).

        Parameters
        ----------
        x, y : Tensor
            ``(B, *S, C)`` channels-last (``x`` normalised, ``y`` not).

        Returns
        -------
        Tensor
            ``(B, *S, nd)`` float32 in voxel units, axis order ``(D, H, W)``, each within
            :meth:`largest_offset`.
        """
        h = self.proj_in(torch.cat([x, y], dim=-1))  # (B, *S, 2C)
        h = self.dwconv(h.movedim(-1, 1)).movedim(1, -1)  # (B, 2C, *S) conv, back to (B, *S, 2C)
        h = self.act(self.norm(h))
        with torch.autocast(h.device.type, enabled=False):
            h = self.offset(_at_least_fp32(h))  # (B, *S, nd), float32 or float64
            if self.offset_scale == "voxel":
                return torch.tanh(h) * self.max_offset
            largest = self.largest_offset(tuple(x.shape[1:-1]))
            return torch.tanh(h) * torch.tensor(largest, device=h.device, dtype=h.dtype)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Resample ``y`` at the deformed grid.

        Returns
        -------
        tuple of Tensor
            ``y_s`` ``(B, C, *S)`` channels-first in the dtype of ``y``, and the float32
            offsets ``(B, *S, nd)``.
        """
        spatial = tuple(x.shape[1:-1])
        off = self.offsets(x, y)  # (B, *S, nd), voxels, (D, H, W) order, float32
        with torch.autocast(off.device.type, enabled=False):
            # voxels -> normalised units for align_corners=True: one voxel = 2 / (n - 1)
            scale = torch.tensor(
                [2.0 / (n - 1) if n > 1 else 0.0 for n in spatial], device=x.device, dtype=off.dtype
            )
            grid = reference_grid(spatial, x.device, off.dtype, self.reference_grid)  # (*S, nd)
            grid = grid + (off * scale).flip(-1)  # flip offsets (D, H, W) -> (W, H, D)
            y_s = F.grid_sample(
                _at_least_fp32(y.movedim(-1, 1)),  # (B, C, *S)
                grid,  # (B, *S, nd), (W, H, D) order
                mode="bilinear",
                padding_mode=self.padding,
                align_corners=True,
            )
        return y_s.to(y.dtype), off


class _Gate(nn.Module):
    """Linear(C -> C/8) -> LN -> GELU -> Linear(-> out) -> sigmoid on the last axis."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        hidden = max(1, dim // 8)
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., C) -> (..., out)`` in ``(0, 1)``."""
        return torch.sigmoid(self.fc2(self.act(self.norm(self.fc1(x)))))


class _Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., C) -> (..., C)``."""
        return self.fc2(self.act(self.fc1(x)))


def _check_block_args(
    dim: int,
    num_heads: int,
    window_size: int,
    spatial_dims: int,
    mlp_ratio: float,
    **choices: str,
) -> None:
    """Check :class:`DCFBBlock`'s sizes and its published-behaviour switches (``ValueError``)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if dim < 1 or num_heads < 1 or dim % num_heads:
        raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    if mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
    allowed_values = {
        "sampled_layout": ("permute", "reshape"),
        "conv_pairing": ("interleaved", "concatenated"),
        "batchnorm_eps": ("default", "dim"),
    }
    for name, value in choices.items():
        allowed = allowed_values[name]
        if value not in allowed:
            raise ValueError(f"DCFBBlock: {name} must be one of {allowed}, got {value!r}")


class DCFBBlock(nn.Module):
    """Deformable Cross Feature Blend block: the own stream ``x`` attends to the other ``y``.

    Parameters
    ----------
    dim : int
        Channels ``C``; divisible by ``num_heads``.
    num_heads : int
        Attention heads.
    window_size : int
        Window edge ``w``; windows hold ``w ** spatial_dims`` tokens.
    spatial_dims : int
        2 or 3.
    mlp_ratio : float
        MLP hidden size / ``C``.
    qkv_bias : bool
        Bias in the Q, K, V projections.
    drop_path : float
        Stochastic depth probability of both residual branches.
    attention_softmax : bool
        ``True``: ``softmax(q k^T / sqrt(d)) v`` (the intent). ``False``: the published
        ``(q / sqrt(d)) k^T v`` without softmax (published defect 3).
    attention_proj : bool
        ``True``: the attention output goes through ``attn_proj``. ``False``: the published
        behaviour, where ``cross_attn.proj`` is computed and its result discarded; the
        module is kept (so published weights load) but never used, and gets no gradient.
    sampled_layout : {"permute", "reshape"}
        How the resampled ``(B, C, *S)`` map becomes channels-last (published defect 1).
    conv_pairing : {"interleaved", "concatenated"}
        Channel order seen by the grouped k7 conv (group ``g`` sees channels ``2g, 2g+1``):
        ``(x_0, y_0, x_1, y_1, ...)`` or the published ``(x_0, .., x_C-1, y_0, .., y_C-1)``.
    batchnorm_eps : {"default", "dim"}
        BatchNorm eps 1e-5 or the published ``eps = dim`` (published defect 2).
    shared_norm : bool
        ``True``: the published reuse of ``norm1`` for the attention output and the MLP
        input (no ``norm_attn``, ``norm2`` modules).
    reference_grid, offset_scale, sampling_padding : str
        Passed to :class:`DeformableSampler` (``sampling_padding`` as ``padding``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        *,
        spatial_dims: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        attention_softmax: bool = True,
        attention_proj: bool = True,
        sampled_layout: str = "permute",
        conv_pairing: str = "interleaved",
        batchnorm_eps: str = "default",
        shared_norm: bool = False,
        reference_grid: str = "aligned",
        offset_scale: str = "voxel",
        sampling_padding: str = "border",
    ) -> None:
        super().__init__()
        _check_block_args(
            dim,
            num_heads,
            window_size,
            spatial_dims,
            mlp_ratio,
            sampled_layout=sampled_layout,
            conv_pairing=conv_pairing,
            batchnorm_eps=batchnorm_eps,
        )
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.spatial_dims = spatial_dims
        self.attention_softmax = attention_softmax
        self.attention_proj = bool(attention_proj)
        self.sampled_layout = sampled_layout
        self.conv_pairing = conv_pairing
        self.shared_norm = bool(shared_norm)
        conv = conv_nd(spatial_dims)

        self.norm1 = nn.LayerNorm(dim)
        self.sampler = DeformableSampler(
            dim,
            spatial_dims,
            reference_grid=reference_grid,
            offset_scale=offset_scale,
            padding=sampling_padding,
        )
        # Conv branch: a grouped k7 conv, group c sees channels (2c, 2c+1) of the pair map.
        # DIVERGENCE: we interleave x and the resampled y so that group c mixes x_c with
        # y_s_c; the published code concatenates [x, y_s] (conv_pairing="concatenated"),
        # so each group mixed two channels of the SAME stream.
        k = 7
        self.conv_mix = conv(2 * dim, dim, k, padding=k // 2, groups=dim)
        # DIVERGENCE (published defect 2): the published LazyBatchNorm3d(dim) got `dim` as
        # its first positional argument, eps (batchnorm_eps="dim").
        eps = float(dim) if batchnorm_eps == "dim" else 1e-5
        self.conv_norm = batch_norm_nd(spatial_dims)(dim, eps=eps)
        self.conv_act = nn.GELU()
        self.conv_proj = nn.Linear(dim, dim)  # 1x1 conv on channels-last
        self.channel_gate = _Gate(dim, dim)
        # Attention branch: Q and V from the own stream, K from the resampled other one.
        self.qv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        # DIVERGENCE: the published block computes cross_attn.proj and discards its output
        # (attention_proj=False keeps the module, unused); we apply it.
        self.attn_proj = nn.Linear(dim, dim)
        self.spatial_gate = _Gate(dim, 1)
        # DIVERGENCE: the published block reuses norm1 for the attention output and the
        # MLP input (shared_norm=True); we give each its own LayerNorm.
        if not self.shared_norm:
            self.norm_attn = nn.LayerNorm(dim)
        self.blend = nn.Linear(2 * dim, dim)
        self.drop_path = DCFBDropPath(drop_path)
        if not self.shared_norm:
            self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def _pair_conv(self, pair: Tensor) -> Tensor:
        """Grouped k7 conv of interleaved pairs: ``(B, *S, 2C)`` -> ``(B, C, *S)``.

        Same weights and result as ``self.conv_mix`` either way; the faster CPU path is
        picked by size (measured with oneDNN on 1-2 threads): on large maps a grouped
        conv on the channels-last view; on small maps a channels-first depthwise conv
        (weight ``(C, 2, k..)`` viewed as ``(2C, 1, k..)``) followed by a pair sum.
        """
        conv = self.conv_mix
        x = pair.movedim(-1, 1)  # (B, 2C, *S) with channels-last strides (no copy)
        if pair[0, ..., 0].numel() >= 4096:
            return conv(x)
        fn = F.conv3d if self.spatial_dims == 3 else F.conv2d
        k = conv.weight.shape[2:]
        w = conv.weight.reshape(2 * self.dim, 1, *k)  # (C, 2, k..) -> (2C, 1, k..)
        out = fn(x.contiguous(), w, None, padding=conv.padding, groups=2 * self.dim)  # (B, 2C, *S)
        out = out.unflatten(1, (self.dim, 2)).sum(2)  # (B, C, 2, *S) -> (B, C, *S)
        return out + conv.bias.reshape(1, -1, *([1] * self.spatial_dims))

    def _attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Windowed multi-head attention.

        ``q, k, v``: ``(B, *S, C)`` -> ``(B, *S, C)``.
        """
        b, *spatial, c = q.shape
        w, h, hd = self.window_size, self.num_heads, self.head_dim

        def heads(t: Tensor) -> Tensor:
            # (B, *S, C) -> (B*nW, N, C) -> (B*nW, N, h, hd) -> (B*nW, h, N, hd)
            t = window_partition(t, w)
            return t.reshape(t.shape[0], t.shape[1], h, hd).transpose(1, 2)

        qh, kh, vh = heads(q), heads(k), heads(v)
        if self.attention_softmax:
            out = F.scaled_dot_product_attention(qh, kh, vh)  # (B*nW, h, N, hd)
        else:
            # Published behaviour: no softmax on the scores.
            out = ((qh * (hd**-0.5)) @ kh.transpose(-2, -1)) @ vh
        out = out.transpose(1, 2).reshape(out.shape[0], -1, c)  # (B*nW, N, C)
        return window_reverse(out, w, b, tuple(spatial))  # (B, *S, C)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Blend ``y`` into ``x``.

        Parameters
        ----------
        x, y : Tensor
            ``(B, *S, C)`` channels-last; every spatial size divisible by ``window_size``.

        Returns
        -------
        Tensor
            Updated ``x``, ``(B, *S, C)``.
        """
        b, *spatial, c = x.shape
        if y.shape != x.shape:
            raise ValueError(f"DCFB streams differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        if c != self.dim:
            raise ValueError(f"DCFB expected {self.dim} channels, got {c}")
        if any(s % self.window_size for s in spatial):
            raise ValueError(
                f"DCFB spatial size {tuple(spatial)} is not divisible by window_size {self.window_size}"
            )
        shortcut = x
        xn = self.norm1(x)  # (B, *S, C); y is deliberately not normalised
        y_s, _ = self.sampler(xn, y)  # (B, C, *S)
        y_s_cl = self._channels_last(y_s)  # (B, *S, C)

        # Conv branch. The pair map (B, *S, 2C) goes to the conv as a channels-last strided
        # view (B, 2C, *S): the grouped k7 conv runs ~2x faster in that memory format on CPU.
        if self.conv_pairing == "interleaved":
            pair = torch.stack([xn, y_s_cl], dim=-1).flatten(-2)  # (B, *S, C, 2) -> x0, y0, x1, ..
        else:
            pair = torch.cat([xn, y_s_cl], dim=-1)  # published: x0, .., x_C-1, y0, ..
        conv = self._pair_conv(pair)  # (B, C, *S)
        conv = self.conv_act(self.conv_norm(conv)).movedim(1, -1)  # (B, *S, C)
        pooled = conv.mean(dim=tuple(range(1, conv.ndim - 1)))  # (B, C)
        cgate = self.channel_gate(pooled)  # (B, C)
        conv = self.conv_proj(conv)  # (B, *S, C)

        # Attention branch (channels-last)
        q, v = self.qv(xn).chunk(2, dim=-1)  # 2 x (B, *S, C)
        v = v * cgate.reshape(b, *([1] * len(spatial)), c)  # channel gate on V
        k = self.k(y_s_cl)  # (B, *S, C)
        attn = self._attention(q, k, v)  # (B, *S, C)
        if self.attention_proj:
            attn = self.attn_proj(attn)
        conv = conv * self.spatial_gate(attn)  # (B, *S, C) * (B, *S, 1)

        norm_attn = self.norm1 if self.shared_norm else self.norm_attn
        out = self.blend(torch.cat([conv, norm_attn(attn)], dim=-1))  # (B, *S, 2C) -> C
        x = shortcut + self.drop_path(out)
        norm2 = self.norm1 if self.shared_norm else self.norm2
        return x + self.drop_path(self.mlp(norm2(x)))

    def _channels_last(self, y_s: Tensor) -> Tensor:
        """The resampled map ``(B, C, *S)`` as channels-last ``(B, *S, C)``.

        DIVERGENCE (published defect 1): the published code reshapes the sampled
        ``(B, C, D, H, W)`` map straight to ``(B, D, H, W, C)`` without a permute
        (``sampled_layout="reshape"``), which scrambles channels and space. We permute.
        """
        if self.sampled_layout == "permute":
            return y_s.movedim(1, -1)
        b, c, *spatial = y_s.shape
        return y_s.reshape(b, *spatial, c)
