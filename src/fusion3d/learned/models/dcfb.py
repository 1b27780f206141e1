"""DC2Fusion: a U-shaped network of DCFB blocks fusing T1 MRI and FDG PET (2D or 3D).

Patch embedding shared by both modalities -> ``n = len(depths)`` encoder stages ->
``n`` mirrored decoder stages with skip connections -> head -> L1NW fusion layer.
In every stage both streams are updated by the same blocks (feature mutual
learning): ``x = blk(x, y); y = blk(y, x)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion3d.learned.models.layers import DCFBBlock, conv_nd, conv_transpose_nd

__all__ = ["DC2Fusion", "SWITCHES", "UPSAMPLING", "VARIANTS", "build_model", "l1nw_fusion"]

#: How the decoder and the head upsample (``upsampling``): ``transposed``, as published, a
#: transposed convolution with kernel = stride (2 between stages, ``patch_size`` in the head),
#: which renders every output block from one token with the same kernel and leaves a
#: ``patch_size``-voxel block pattern (docs/reproducing.md, "Block pattern"); ``trilinear``:
#: (bi/tri)linear upsampling then a 3-wide convolution. Not a divergence: both variants
#: default to ``transposed``.
UPSAMPLING: tuple[str, ...] = ("transposed", "trilinear")

#: Every divergence from the published code as a switch: name -> (allowed values, what it
#: controls). Each is a constructor argument of :class:`DC2Fusion` (see the DCFB block).
SWITCHES: dict[str, tuple[tuple, str]] = {
    "attention_softmax": ((True, False), "softmax on the attention scores (published: none)"),
    "attention_proj": ((True, False), "apply cross_attn.proj (published: computed, discarded)"),
    "sampled_layout": (("permute", "reshape"), "resampled map to channels-last"),
    "conv_pairing": (("interleaved", "concatenated"), "channel pairs of the grouped k7 conv"),
    "batchnorm_eps": (("default", "dim"), "BatchNorm eps 1e-5 or eps = channels"),
    "shared_norm": ((False, True), "one LayerNorm (norm1) for input, attention output and MLP"),
    "reference_grid": (("aligned", "published"), "zero-offset sampling grid"),
    "offset_scale": (("voxel", "published"), "largest offset 1 voxel or (n-1)/n voxel"),
    "sampling_padding": (("border", "zeros"), "grid_sample padding of the deformable sampling"),
}

#: The switch values of each variant: ``fixed`` (the intended behaviour, the default) and
#: ``published`` (the published DC2Fusion code as it runs).
VARIANTS: dict[str, dict[str, bool | str]] = {
    "fixed": {
        "attention_softmax": True,
        "attention_proj": True,
        "sampled_layout": "permute",
        "conv_pairing": "interleaved",
        "batchnorm_eps": "default",
        "shared_norm": False,
        "reference_grid": "aligned",
        "offset_scale": "voxel",
        "sampling_padding": "border",
    },
    "published": {
        "attention_softmax": False,
        "attention_proj": False,
        "sampled_layout": "reshape",
        "conv_pairing": "concatenated",
        "batchnorm_eps": "dim",
        "shared_norm": True,
        "reference_grid": "published",
        "offset_scale": "published",
        "sampling_padding": "zeros",
    },
}


def resolve_switches(variant: str, overrides: dict) -> dict[str, bool | str]:
    """Expand ``variant`` into every switch; explicit (non-``None``) ``overrides`` win.

    Raises ``ValueError`` naming an unknown variant or a switch with a value it does not take.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    out = dict(VARIANTS[variant])
    for name, value in overrides.items():
        if value is None:
            continue
        allowed = SWITCHES[name][0]
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
        out[name] = value
    return out


def l1nw_fusion(f1: Tensor, f2: Tensor) -> Tensor:
    """L1-norm-weighted fusion ``F = |f1|_1 f1 + |f2|_1 f2`` (no normalisation).

    The L1 norms are scalars per sample (sum of ``|f|`` over all channels and voxels).
    With batch 1, as in the paper, this is the published "whole tensor" norm; with
    larger batches (2D slices) each sample keeps its own weights.

    Parameters
    ----------
    f1, f2 : Tensor
        ``(B, 1, *S)``.

    Returns
    -------
    Tensor
        ``(B, 1, *S)``.
    """
    dims = tuple(range(1, f1.ndim))
    w1 = f1.abs().sum(dim=dims, keepdim=True)  # (B, 1, 1, ...)
    w2 = f2.abs().sum(dim=dims, keepdim=True)
    return w1 * f1 + w2 * f2


class _Stage(nn.Module):
    """A list of DCFB blocks applied with feature mutual learning."""

    def __init__(self, blocks: Sequence[DCFBBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, *S, C)`` x2 -> ``(B, *S, C)`` x2. MRI queries PET, then PET the updated MRI."""
        for blk in self.blocks:
            x = blk(x, y)
            y = blk(y, x)
        return x, y


class _InterpConv(nn.Module):
    """Linear upsampling by ``factor`` then a 3-wide convolution; channels-first I/O.

    The ``upsampling="trilinear"`` replacement of a transposed convolution with kernel =
    stride = ``factor``: ``(B, C_in, *S) -> (B, C_out, *(factor S))``.
    """

    def __init__(self, in_ch: int, out_ch: int, spatial_dims: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.mode = "trilinear" if spatial_dims == 3 else "bilinear"
        self.conv = conv_nd(spatial_dims)(in_ch, out_ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Upsample, then convolve."""
        up = F.interpolate(x, scale_factor=self.factor, mode=self.mode, align_corners=False)
        return self.conv(up)


def _upsampler(
    in_ch: int, out_ch: int, spatial_dims: int, factor: int, upsampling: str
) -> nn.Module:
    """``upsampling``'s layer: transposed conv (kernel = stride = ``factor``) or :class:`_InterpConv`."""
    if upsampling == "trilinear":
        return _InterpConv(in_ch, out_ch, spatial_dims, factor)
    return conv_transpose_nd(spatial_dims)(in_ch, out_ch, factor, stride=factor)


class _Resample(nn.Module):
    """Strided conv (down) or ``upsampling``'s x2 layer (up), then LayerNorm; channels-last I/O."""

    def __init__(
        self, in_ch: int, out_ch: int, spatial_dims: int, up: bool, upsampling: str = "transposed"
    ) -> None:
        super().__init__()
        if up:
            self.conv = _upsampler(in_ch, out_ch, spatial_dims, 2, upsampling)
        else:
            self.conv = conv_nd(spatial_dims)(in_ch, out_ch, 2, stride=2)
        self.norm = nn.LayerNorm(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, *S, C_in) -> (B, *S', C_out)`` with ``S' = S / 2`` (down) or ``2 S`` (up)."""
        return self.norm(self.conv(x.movedim(-1, 1)).movedim(1, -1))


def _as_int_tuple(name: str, value: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError as exc:
        raise ValueError(f"{name} must be a sequence of integers, got {value!r}") from exc
    if not out or any(v < 1 for v in out) or any(int(v) != v for v in value):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")
    return out


def _check_sizes(
    spatial_dims: int,
    in_channels: int,
    patch_size: int,
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_size: int,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check the sizes of :class:`DC2Fusion`; return ``depths`` and ``num_heads`` as tuples."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    for name, val in (
        ("in_channels", in_channels),
        ("patch_size", patch_size),
        ("embed_dim", embed_dim),
        ("window_size", window_size),
    ):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even (the head halves it), got {embed_dim}")
    depths = _as_int_tuple("depths", depths)
    num_heads = _as_int_tuple("num_heads", num_heads)
    if len(depths) != len(num_heads):
        raise ValueError(
            f"depths {depths} and num_heads {num_heads} must have the same length (stages)"
        )
    for i, h in enumerate(num_heads):
        ch = embed_dim * 2**i
        if ch % h:
            raise ValueError(
                f"stage {i}: {ch} channels (embed_dim * 2**{i}) not divisible by num_heads[{i}]={h}"
            )
    return depths, num_heads


class DC2Fusion(nn.Module):
    """The DC2Fusion network (DCFB blocks, feature mutual learning, L1NW fusion).

    Parameters
    ----------
    spatial_dims : int
        3 (volumes ``(B, 1, D, H, W)``) or 2 (slices ``(B, 1, H, W)``).
    in_channels : int
        Channels per modality image (1).
    patch_size : int
        Edge of the shared patch embedding (kernel = stride).
    embed_dim : int
        Channels of stage 0; stage ``i`` has ``embed_dim * 2**i``. Must be even.
    depths : sequence of int
        Blocks per stage; ``len(depths)`` stages. The decoder mirrors the encoder.
    num_heads : sequence of int
        Heads per stage (same length as ``depths``); must divide the stage channels.
    window_size : int
        Attention window edge; windows hold ``window_size ** spatial_dims`` tokens.
    mlp_ratio : float
        MLP hidden size / channels.
    drop_path_rate : float
        Stochastic depth, linear from 0 to this value over the encoder blocks; each
        decoder stage reuses the rates of its encoder stage.
    qkv_bias : bool
        Bias in the Q, K, V projections.
    variant : {"fixed", "published"}
        ``fixed`` (default): the intended behaviour where the published code is defective.
        ``published``: every divergence set to the published code's behaviour (:data:`VARIANTS`).
    attention_softmax, attention_proj, sampled_layout, conv_pairing, batchnorm_eps, ...
        The single switches of :data:`SWITCHES` (also ``shared_norm``, ``reference_grid``,
        ``offset_scale``, ``sampling_padding``; documented in :class:`DCFBBlock`).
        ``None`` (default) takes the value of ``variant``; a value given here overrides it
        (ablations).
    upsampling : {"transposed", "trilinear"}
        How the decoder stages (x2) and the head (x ``patch_size``) upsample
        (:data:`UPSAMPLING`): ``transposed`` (default), as published; ``trilinear``,
        linear upsampling then a 3-wide convolution, without the block pattern. Not part
        of ``variant``.

    Attributes
    ----------
    init_args : dict
        Every constructor argument, fully resolved (plain str/int/float/bool/list):
        ``DC2Fusion(**model.init_args)`` rebuilds the same network.

    Notes
    -----
    Every input spatial size must be divisible by :attr:`size_divisor`
    ``= patch_size * 2**(len(depths) - 1) * window_size`` (the coarsest stage must tile
    into whole windows).
    """

    #: No constructor argument may change at ``fusion3d fuse`` time: every switch of a
    #: checkpoint is part of what it was trained with.
    inference_keys: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        spatial_dims: int = 3,
        in_channels: int = 1,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 2,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        qkv_bias: bool = True,
        variant: str = "fixed",
        attention_softmax: bool | None = None,
        attention_proj: bool | None = None,
        sampled_layout: str | None = None,
        conv_pairing: str | None = None,
        batchnorm_eps: str | None = None,
        shared_norm: bool | None = None,
        reference_grid: str | None = None,
        offset_scale: str | None = None,
        sampling_padding: str | None = None,
        upsampling: str = "transposed",
    ) -> None:
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {list(UPSAMPLING)}, got {upsampling!r}")
        switches = resolve_switches(
            variant,
            {
                "attention_softmax": attention_softmax,
                "attention_proj": attention_proj,
                "sampled_layout": sampled_layout,
                "conv_pairing": conv_pairing,
                "batchnorm_eps": batchnorm_eps,
                "shared_norm": shared_norm,
                "reference_grid": reference_grid,
                "offset_scale": offset_scale,
                "sampling_padding": sampling_padding,
            },
        )
        depths, num_heads = _check_sizes(
            spatial_dims, in_channels, patch_size, embed_dim, depths, num_heads, window_size
        )
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self._init_args = {
            "spatial_dims": int(spatial_dims),
            "in_channels": in_channels,
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "depths": list(depths),
            "num_heads": list(num_heads),
            "window_size": window_size,
            "mlp_ratio": float(mlp_ratio),
            "drop_path_rate": float(drop_path_rate),
            "qkv_bias": bool(qkv_bias),
            "variant": variant,
            **switches,
            "upsampling": upsampling,
        }
        self.variant = variant
        self.switches = switches
        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depths = depths
        self.num_heads = num_heads
        self.window_size = window_size
        self.n_stages = len(depths)
        self.size_divisor = patch_size * 2 ** (self.n_stages - 1) * window_size
        self.upsampling = upsampling
        self._build(float(mlp_ratio), float(drop_path_rate), bool(qkv_bias), switches)

    def _build(
        self, mlp_ratio: float, drop_path_rate: float, qkv_bias: bool, switches: dict
    ) -> None:
        """Create the modules (in a fixed order: a seeded init gives the same weights)."""
        sd, embed_dim, depths = self.spatial_dims, self.embed_dim, self.depths
        conv = conv_nd(sd)
        self.patch_embed = conv(
            self.in_channels, embed_dim, self.patch_size, stride=self.patch_size
        )

        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stage_rates = [rates[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(self.n_stages)]
        dims = [embed_dim * 2**i for i in range(self.n_stages)]

        def make_stage(i: int) -> _Stage:
            return _Stage(
                [
                    DCFBBlock(
                        dims[i],
                        self.num_heads[i],
                        self.window_size,
                        spatial_dims=sd,
                        mlp_ratio=mlp_ratio,
                        qkv_bias=qkv_bias,
                        drop_path=stage_rates[i][j],
                        **switches,
                    )
                    for j in range(depths[i])
                ]
            )

        last = self.n_stages - 1
        self.encoder = nn.ModuleList([make_stage(i) for i in range(self.n_stages)])
        self.downsample = nn.ModuleList(
            [_Resample(dims[i], dims[i + 1], sd, up=False) for i in range(last)]
        )
        self.bottleneck_norm = nn.LayerNorm(dims[last])
        # decoder modules indexed by stage i (0 = finest); stage `last` has no skip.
        self.skip_proj = nn.ModuleList([nn.Linear(2 * dims[i], dims[i]) for i in range(last)])
        self.decoder = nn.ModuleList([make_stage(i) for i in range(self.n_stages)])
        self.upsample = nn.ModuleList(
            [_Resample(dims[i + 1], dims[i], sd, True, self.upsampling) for i in range(last)]
        )
        self.head_norm = nn.LayerNorm(2 * embed_dim)
        # published: a transposed conv, kernel = stride = patch_size (reverse_patch_embedding)
        self.head_up = _upsampler(
            2 * embed_dim, embed_dim // 2, sd, self.patch_size, self.upsampling
        )
        self.head_out = conv(embed_dim // 2, 2, 3, padding=1)

    @property
    def init_args(self) -> dict:
        """Every constructor argument, resolved; a fresh copy (lists, not tuples)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._init_args.items()}

    def check_input(self, mri: Tensor, pet: Tensor) -> None:
        """Raise ``ValueError`` when the inputs cannot go through the network."""
        want = 2 + self.spatial_dims
        for name, t in (("mri", mri), ("pet", pet)):
            if t.ndim != want or t.shape[1] != self.in_channels:
                layout = "(B, C, D, H, W)" if self.spatial_dims == 3 else "(B, C, H, W)"
                raise ValueError(
                    f"{name}: expected {layout} with C={self.in_channels}, got {tuple(t.shape)}"
                )
        if mri.shape != pet.shape:
            raise ValueError(f"mri {tuple(mri.shape)} and pet {tuple(pet.shape)} differ in shape")
        bad = [s for s in mri.shape[2:] if s % self.size_divisor]
        if bad:
            raise ValueError(
                f"spatial size {tuple(mri.shape[2:])} must be divisible by {self.size_divisor} "
                f"(patch_size {self.patch_size} * 2**{self.n_stages - 1} downsamplings * "
                f"window_size {self.window_size})"
            )

    def forward_streams(self, mri: Tensor, pet: Tensor) -> tuple[Tensor, Tensor]:
        """Return the two head maps ``f1, f2`` ``(B, 1, *S)`` before the L1NW fusion."""
        self.check_input(mri, pet)
        # shared patch embedding: (B, 1, *S) -> (B, E, *S/p) -> channels-last (B, *S/p, E)
        x = self.patch_embed(mri).movedim(1, -1)
        y = self.patch_embed(pet).movedim(1, -1)
        skips: list[tuple[Tensor, Tensor]] = []
        for i, stage in enumerate(self.encoder):
            x, y = stage(x, y)  # (B, *S_i, C_i)
            if i < self.n_stages - 1:
                skips.append((x, y))
                x, y = self.downsample[i](x), self.downsample[i](y)  # (B, *S_i/2, 2 C_i)
        x, y = self.bottleneck_norm(x), self.bottleneck_norm(y)
        for i in reversed(range(self.n_stages)):
            if i < self.n_stages - 1:
                sx, sy = skips[i]
                # skip: concat (B, *S_i, 2 C_i) -> Linear -> (B, *S_i, C_i)
                x = self.skip_proj[i](torch.cat([x, sx], dim=-1))
                y = self.skip_proj[i](torch.cat([y, sy], dim=-1))
            x, y = self.decoder[i](x, y)
            if i > 0:
                x, y = self.upsample[i - 1](x), self.upsample[i - 1](y)  # (B, *2S_i, C_i/2)
        # head: concat streams (B, *S_0, 2E) -> LN -> channels-first (B, 2E, *S_0)
        h = self.head_norm(torch.cat([x, y], dim=-1)).movedim(-1, 1)
        h = self.head_out(self.head_up(h))  # (B, E/2, *S) -> (B, 2, *S)
        return h[:, :1], h[:, 1:]

    def forward(self, mri: Tensor, pet: Tensor) -> Tensor:
        """Fuse.

        Parameters
        ----------
        mri, pet : Tensor
            ``(B, 1, D, H, W)`` (3D) or ``(B, 1, H, W)`` (2D), values in [0, 1].

        Returns
        -------
        Tensor
            Fused image, same shape as ``mri``; not clipped (the loss sees the raw map).
        """
        f1, f2 = self.forward_streams(mri, pet)
        return l1nw_fusion(f1, f2)


def build_model(config: dict) -> DC2Fusion:
    """Build :class:`DC2Fusion` from its init kwargs (``variant`` and switches included).

    Raises ``ValueError`` naming unknown keys and the allowed ones.
    """
    if not isinstance(config, dict):
        raise ValueError(f"model config must be a dict, got {type(config).__name__}")
    allowed = set(inspect.signature(DC2Fusion.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"model config: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return DC2Fusion(**config)
