"""SwinFuse (Wang et al., IEEE TIM 2022): a residual Swin-transformer auto-encoder, in 2D.

A port of the published code, Zhishe-Wang/SwinFuse (files ``net.py``, ``fusion_strategy.py``,
``test.py``, ``utils.py``, ``args_fusion.py``; cited as ``file:line`` below). Nothing of it is
imported: this module re-implements it with the same parameter and buffer names, so a
``state_dict`` saved by the published ``train.py`` loads with the identity key map
(:func:`convert_published_state_dict`).

Network (``net.py:316-482``): a 1x1 patch embedding (``Conv2d(1, 96, 1)`` + LayerNorm), three
residual stages ``EN1_0, EN2_0, EN3_0`` of Swin blocks (window 7, heads 1/2/4, MLP ratio 4,
depth 6 each) on the full-resolution token grid (no down-sampling), a LayerNorm, then the
decoder ``up_x4``: ``Conv2d(96, 1, 1)`` and ``tanh``. Training (``train.py:83``) is the
auto-encoder reconstruction ``forward(x) = up_x4(encoder(x))`` (``finaldecoder``) of single
grey images on the [-1, 1] scale. Inference (``test.py:28-89``) encodes each source, fuses
the features with the row-vector + column-vector attention rule of ``fusion_strategy.py``
(``"l1_mean"``, ``test.py:103``) and decodes.

Published behaviour kept on purpose (each is the default; a switch gives the alternative):

- ``run_all_blocks=False``: the published ``StageModule.forward`` returns inside its loop
  (``net.py:258-264``), so only the first block (the un-shifted window attention) of each
  stage runs; the other five blocks exist (their weights are in the published state_dict)
  but never compute. ``True`` runs every block, as the Swin design intends.
- ``freeze_unused=True``: the parameters that the published forward never uses (blocks 1..5
  of each stage, ``norm_up``, ``prelu``) get ``requires_grad=False``. The published Adam
  never updates them either (their gradient stays ``None``), so training is unchanged; it
  lets DistributedDataParallel run without ``find_unused_parameters``.

Input and output conventions of ``test.py`` / ``utils.py``, applied inside :meth:`SwinFuse.fuse`:

- ``quantize_input=True``: the sources are 8-bit grey images (``imread(path, mode='L')``,
  ``utils.py:117``): ours are rounded to ``round(255 x)``; then ``(v - 127.5) / 127.5``
  (``utils.py:118``) gives the network's [-1, 1] scale.
- Channel order: the published call is ``fusion(encoder(ir), encoder(vi))``
  (``test.py:39-42``); PET plays the infrared image, MRI the visible one. The rule is
  symmetric in its two inputs, so the order does not change the result.
- Tiling (``utils.py:143-234``, ``test.py:47-80``): the image is zero-padded at the bottom
  and right (``pad_value=0.0`` on the [-1, 1] scale, i.e. mid-grey) to a multiple of
  ``img_size`` (224) and cut into ``img_size`` tiles; each tile is fused alone and the
  outputs are put back and cropped. The published ``get_test_images`` only knows eight
  size classes above 224 and fails for images of at most 224 pixels (no branch sets
  ``c``), such as our 64x64 and 128x128 slices; here the same padding-and-tiling rule is
  applied to every size (one padded tile for 64 and 128) -- the smallest change that runs.
- Output: ``((tanh / 2) + 0.5) * 255`` (``test.py:63``), then ``save_image_test``
  (``utils.py:639-653``) stretches each fused image to its own min..max and truncates to
  8 bits. Here the output stays on [0, 1]: ``output_stretch=True`` applies the stretch
  (per image of the batch; a constant image gives 0, where the published division is 0/0),
  ``quantize_output=True`` the truncation ``floor(255 v) / 255``.

Other switches: ``img_size`` and ``window_size`` are constructor arguments of the published
class (``net.py:317-319``); ``SwinFuse(img_size=64, window_size=8)`` trains and fuses our
slices without resizing or padding (224 = 7 * 32 has no divisor that also divides 64).
``fusion_type`` ("l1_mean", "l2_mean", "linf") and ``fusion_eps`` (``1e-5``,
``fusion_strategy.py:10``) are the fusion rule's options; the published ``"linf"`` row
vector handles a batch of one only (``fusion_strategy.py:75-82``), here it is per image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils import checkpoint

from fusion3d.learned.models.shared import DropPath
from fusion3d.learned.models.swin import (
    Mlp,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

__all__ = [
    "FUSION_TYPES",
    "SwinFuse",
    "attention_fusion_weight",
    "column_vector_attention",
    "row_vector_attention",
]

#: ``fusion_strategy.py:10``.
FUSION_EPSILON = 1e-5
FUSION_TYPES = ("l1_mean", "l2_mean", "linf")


# -- fusion rule (fusion_strategy.py) -------------------------------------------------------
def row_vector_attention(tensor: Tensor, p_type: str = "l1_mean") -> Tensor:
    """Channel activity ``(B, C, 1, 1)`` of features ``(B, C, H, W)`` (``fusion_strategy.py:63``).

    ``l1_mean``: ``|x|_1 / (H W)`` over each channel; ``l2_mean``: ``|x|_2 / (H W)``;
    ``linf``: the channel maximum (signed, as ``np.amax``).
    """
    h, w = tensor.shape[2], tensor.shape[3]
    if p_type == "l1_mean":
        return torch.linalg.vector_norm(tensor, 1, dim=(2, 3), keepdim=True) / (h * w)
    if p_type == "l2_mean":
        return torch.linalg.vector_norm(tensor, 2, dim=(2, 3), keepdim=True) / (h * w)
    if p_type == "linf":
        return tensor.amax(dim=(2, 3), keepdim=True)
    raise ValueError(f"fusion_type must be one of {FUSION_TYPES}, got {p_type!r}")


def column_vector_attention(tensor: Tensor, p_type: str = "l1_mean") -> Tensor:
    """Spatial activity ``(B, 1, H, W)`` of features ``(B, C, H, W)`` (``fusion_strategy.py:87``).

    ``l1_mean``: ``|x|_1 / C`` over the channels at each pixel; ``l2_mean``: ``|x|_2 / C``;
    ``linf``: the channel maximum ``/ C``.
    """
    c = tensor.shape[1]
    if p_type == "l1_mean":
        return torch.linalg.vector_norm(tensor, 1, dim=1, keepdim=True) / c
    if p_type == "l2_mean":
        return torch.linalg.vector_norm(tensor, 2, dim=1, keepdim=True) / c
    if p_type == "linf":
        return tensor.amax(dim=1, keepdim=True) / c
    raise ValueError(f"fusion_type must be one of {FUSION_TYPES}, got {p_type!r}")


def _soft_weights(a1: Tensor, a2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``exp(a_i) / (exp(a1) + exp(a2) + eps)`` (``fusion_strategy.py:30-31, 49-50``)."""
    e1, e2 = torch.exp(a1), torch.exp(a2)
    return e1 / (e1 + e2 + eps), e2 / (e1 + e2 + eps)


def attention_fusion_weight(
    tensor1: Tensor, tensor2: Tensor, p_type: str = "l1_mean", eps: float = FUSION_EPSILON
) -> Tensor:
    """The published fusion rule of two feature maps ``(B, C, H, W)`` (``fusion_strategy.py:13``).

    ``F = (r1 t1 + r2 t2) + (c1 t1 + c2 t2)`` -- a sum, not a mean -- with the row weights
    ``r_i = exp(R_i) / (exp(R_1) + exp(R_2) + eps)`` of the channel activities ``R_i``
    (:func:`row_vector_attention`) and the column weights ``c_i`` likewise from the
    spatial activities (:func:`column_vector_attention`).
    """
    r1, r2 = _soft_weights(
        row_vector_attention(tensor1, p_type), row_vector_attention(tensor2, p_type), eps
    )
    c1, c2 = _soft_weights(
        column_vector_attention(tensor1, p_type), column_vector_attention(tensor2, p_type), eps
    )
    fused = (r1 * tensor1 + r2 * tensor2) + (c1 * tensor1 + c2 * tensor2)
    # the published .repeat() of the weights makes F contiguous (NCHW) whatever the layout
    # of the features; the decoder's 1x1 conv then runs the same kernel as there
    return fused.contiguous()


# -- Swin blocks (net.py:11-276) --------------------------------------------------------------
class WindowAttention(nn.Module):
    """Window multi-head self-attention with a relative position bias (``net.py:44``)."""

    def __init__(
        self, dim: int, ws: int, num_heads: int, qkv_bias: bool, qk_scale, attn_drop, proj_drop
    ) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, (ws, ws), num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * ws - 1) * (2 * ws - 1), num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        wa = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(wa, wa, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """One (shifted-)window Swin block with pre-norm residuals (``net.py:124``)."""

    def __init__(self, dim, resolution, num_heads, ws, shift, cfg: Mapping[str, Any], dp) -> None:
        super().__init__()
        self.input_resolution = resolution
        if min(resolution) <= ws:  # net.py:136-139: one window, no shift
            shift, ws = 0, min(resolution)
        if not 0 <= shift < ws:
            raise ValueError(f"shift_size {shift} must be in [0, window_size {ws})")
        self.window_size, self.shift_size = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, ws, num_heads, cfg["qkv_bias"], cfg["qk_scale"], cfg["attn_drop"], cfg["drop"]
        )
        self.drop_path = DropPath(dp) if dp > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg["mlp_ratio"]), cfg["drop"])
        mask = shifted_window_mask(*resolution, ws, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.input_resolution
        b, length, c = x.shape
        ws, shift = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, ws).view(-1, ws * ws, c)
        windows = self.attn(windows, mask=self.attn_mask).view(-1, ws, ws, c)
        x = window_reverse(windows, ws, h, w)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = shortcut + self.drop_path(x.view(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class StageModule(nn.Module):
    """``depth`` Swin blocks, alternately un-shifted and shifted by ``ws // 2`` (``net.py:235``)."""

    def __init__(self, dim, resolution, depth, num_heads, ws, cfg, dpr, run_all, ckpt) -> None:
        super().__init__()
        self.run_all_blocks, self.use_checkpoint = run_all, ckpt
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim, resolution, num_heads, ws, 0 if i % 2 == 0 else ws // 2, cfg, dpr[i]
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        # net.py:258-264 returns after the first block; run_all_blocks runs them all
        blocks = self.blocks if self.run_all_blocks else self.blocks[:1]
        for blk in blocks:
            if self.use_checkpoint and x.requires_grad:
                x = checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x


class PatchEmbed(nn.Module):
    """``Conv2d(in, embed, patch, stride=patch)`` then LayerNorm, to tokens (``net.py:278``)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, norm: bool):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patches_resolution = [img_size // patch_size, img_size // patch_size]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[2:]) != self.img_size:  # net.py:301 asserts the same
            raise ValueError(
                f"SwinFuse: input size {tuple(x.shape[2:])} must equal img_size {self.img_size} "
                "(fuse() tiles any size; the training loss resizes)"
            )
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


# -- the network (net.py:316-482) --------------------------------------------------------------
def _check_sizes(img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size):
    """Raise ValueError for sizes the published network cannot run with."""
    if len(depths) != 3 or len(num_heads) != 3:
        raise ValueError(
            f"SwinFuse has three stages (EN1_0, EN2_0, EN3_0): depths {list(depths)} and "
            f"num_heads {list(num_heads)} must have 3 entries each"
        )
    if min(depths) < 1 or any(embed_dim % h for h in num_heads):
        raise ValueError(
            f"depths {list(depths)} must be >= 1 and embed_dim {embed_dim} divisible by "
            f"every num_heads {list(num_heads)}"
        )
    if patch_size != 1:
        raise ValueError(
            f"patch_size must be 1 (net.py:279; the decoder has no up-sampling), got {patch_size}"
        )
    ws = min(window_size, img_size)
    if img_size % ws:
        raise ValueError(
            f"img_size {img_size} must be a multiple of window_size {window_size} "
            "(window_partition, net.py:30); e.g. img_size=64 with window_size=8"
        )
    if in_chans != 1:
        raise ValueError(f"in_chans must be 1 (grey images, test.py:108), got {in_chans}")


class SwinFuse(nn.Module):
    """The published SwinFuse auto-encoder with its inference-time fusion (module docstring).

    Parameters
    ----------
    img_size : int
        Side of the square training image and of the inference tile (224,
        ``net.py:317``; ``args_fusion.py:14-16``).
    patch_size, in_chans, out_chans, embed_dim : int
        1, 1, 1, 96 (``net.py:317-318``; ``test.py:108``, ``args_fusion.py:5-7``).
    depths, num_heads : sequence of 3 ints
        ``[6, 6, 6]`` and ``[1, 2, 4]`` (``net.py:318``).
    window_size : int
        7 (``net.py:319``, ``args_fusion.py:8``).
    mlp_ratio, qkv_bias, qk_scale : float, bool, float or None
        4.0, True, None (``net.py:319``).
    drop_rate, attn_drop_rate, drop_path_rate : float
        0, 0, 0.2 (``net.py:320``); stochastic depth rises linearly over the 18 blocks
        (``net.py:355``).
    ape, patch_norm, use_checkpoint : bool
        False, True, False (``net.py:321-322``).
    run_all_blocks, freeze_unused : bool
        False and True: see the module docstring.
    fusion_type : str
        ``"l1_mean"`` (``test.py:103``).
    fusion_eps : float
        ``1e-5`` (``fusion_strategy.py:10``).
    quantize_input, output_stretch, quantize_output : bool
        True: the 8-bit input, the per-image min-max stretch and the 8-bit output of
        ``utils.py:117`` and ``utils.py:639-653``.
    pad_value : float
        0.0, on the [-1, 1] scale (``utils.py:183``).

    Attributes
    ----------
    spatial_dims : int
        2.
    size_divisor : int
        1: :meth:`fuse` pads and tiles any size; :meth:`forward` takes ``img_size`` squares.
    init_args : dict
        Every constructor argument, resolved; ``SwinFuse(**model.init_args)`` rebuilds it.
    inference_keys : tuple of str
        Constructor arguments that change how :meth:`fuse` runs but not the weights
        (``fusion3d fuse --set KEY=VALUE`` may change them for a checkpoint).
    """

    spatial_dims = 2
    size_divisor = 1
    inference_keys = (
        "fusion_type", "fusion_eps", "quantize_input", "pad_value", "output_stretch",
        "quantize_output", "run_all_blocks",
    )  # fmt: skip
    #: Old spelling -> new, refused with a message naming the new one (checkpoints written
    #: with the old spelling still load: :func:`fusion3d.learned.inference.load_model`).
    renamed_args = {"quantise_input": "quantize_input", "quantise_output": "quantize_output"}

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 1,
        in_chans: int = 1,
        out_chans: int = 1,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6),
        num_heads: Sequence[int] = (1, 2, 4),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        run_all_blocks: bool = False,
        freeze_unused: bool = True,
        fusion_type: str = "l1_mean",
        fusion_eps: float = FUSION_EPSILON,
        quantize_input: bool = True,
        pad_value: float = 0.0,
        output_stretch: bool = True,
        quantize_output: bool = True,
    ) -> None:
        super().__init__()
        depths, num_heads = [int(d) for d in depths], [int(h) for h in num_heads]
        _check_sizes(img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size)
        if fusion_type not in FUSION_TYPES:
            raise ValueError(f"fusion_type must be one of {FUSION_TYPES}, got {fusion_type!r}")
        self._init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self._init_args.update(depths=depths, num_heads=num_heads)
        self.img_size, self.embed_dim, self.ape = int(img_size), int(embed_dim), bool(ape)
        self.run_all_blocks = bool(run_all_blocks)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, patch_norm)
        res = tuple(self.patch_embed.patches_resolution)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, res[0] * res[1], embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        cfg = {
            "mlp_ratio": mlp_ratio,
            "qkv_bias": qkv_bias,
            "qk_scale": qk_scale,
            "drop": drop_rate,
            "attn_drop": attn_drop_rate,
        }
        for i, name in enumerate(("EN1_0", "EN2_0", "EN3_0")):
            stage_dpr = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            args = (embed_dim, res, depths[i], num_heads[i], window_size, cfg, stage_dpr)
            setattr(self, name, StageModule(*args, self.run_all_blocks, use_checkpoint))
        self.norm = nn.LayerNorm(embed_dim)
        self.norm_up = nn.LayerNorm(embed_dim * 2)  # net.py:397, never used
        self.conv = nn.Conv2d(embed_dim, out_chans, kernel_size=(1, 1), stride=(1, 1))
        self.prelu = nn.PReLU()  # net.py:401, never used
        self.tanh = nn.Tanh()
        self.apply(self._init_weights)
        if freeze_unused and not self.run_all_blocks:
            for p in self.unused_parameters():
                p.requires_grad_(False)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Truncated-normal Linear weights (std 0.02), unit LayerNorms (``net.py:406``)."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @property
    def init_args(self) -> dict:
        """Every constructor argument, resolved; a fresh copy (lists, not tuples)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._init_args.items()}

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters the forward never uses: blocks 1.. (unless ``run_all_blocks``), norm_up, prelu."""
        params = list(self.norm_up.parameters()) + list(self.prelu.parameters())
        if not self.run_all_blocks:
            for stage in (self.EN1_0, self.EN2_0, self.EN3_0):
                params += [p for blk in stage.blocks[1:] for p in blk.parameters()]
        return params

    # -- published network ------------------------------------------------------------------
    def encoder(self, x: Tensor) -> Tensor:
        """``(B, 1, S, S)`` on [-1, 1] -> features ``(B, E, S, S)`` (``net.py:424-450``)."""
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        x1 = self.EN1_0(x) + x
        x2 = self.EN2_0(x1) + x1
        x3 = self.norm(self.EN3_0(x2) + x2)
        b, length, c = x3.shape
        side = int(length**0.5)
        return x3.view(b, side, side, c).permute(0, 3, 1, 2)

    def up_x4(self, x: Tensor) -> Tensor:
        """Decoder: ``tanh(Conv2d(E, 1, 1)(x))`` (``net.py:470``)."""
        return self.tanh(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        """The training forward ``finaldecoder`` (``net.py:477``, ``train.py:83``).

        Parameters
        ----------
        x : Tensor
            ``(B, 1, img_size, img_size)`` grey images on the [-1, 1] scale.

        Returns
        -------
        Tensor
            The reconstruction, same shape, on (-1, 1) (``tanh``).
        """
        return self.up_x4(self.encoder(x))

    # -- published inference (test.py) -------------------------------------------------------
    def to_network_scale(self, x: Tensor) -> Tensor:
        """[0, 1] -> [-1, 1]: ``(round(255 x) - 127.5) / 127.5`` (``utils.py:117-118``)."""
        v = torch.round(x.clamp(0, 1) * 255) if self._init_args["quantize_input"] else x * 255
        return (v - 127.5) / 127.5

    def fuse_tiles(self, mri: Tensor, pet: Tensor) -> Tensor:
        """Fuse ``img_size`` tiles on [-1, 1]; returns ``(tanh / 2) + 0.5`` (``test.py:57-63``)."""
        f_ir, f_vi = self.encoder(pet), self.encoder(mri)
        args = self._init_args
        fused = attention_fusion_weight(f_ir, f_vi, args["fusion_type"], args["fusion_eps"])
        return (self.up_x4(fused) / 2) + 0.5

    def fuse(self, mri: Tensor, pet: Tensor) -> Tensor:
        """The published inference for a batch of slice pairs (``test.py:28-89``).

        Parameters
        ----------
        mri, pet : Tensor
            ``(B, 1, H, W)`` on the [0, 1] scale, any ``H, W``.

        Returns
        -------
        Tensor
            ``(B, 1, H, W)`` fused images on the [0, 1] scale (call in ``eval()`` mode: in
            training mode stochastic depth is active, as in the published model).
        """
        for name, t in (("mri", mri), ("pet", pet)):
            if t.ndim != 4 or t.shape[1] != 1:
                raise ValueError(
                    f"SwinFuse.fuse: {name} must be (B, 1, H, W), got {tuple(t.shape)}"
                )
        if mri.shape != pet.shape:
            raise ValueError(f"mri {tuple(mri.shape)} and pet {tuple(pet.shape)} differ in shape")
        b, _, h, w = mri.shape
        s = self.img_size
        nh, nw = -(-h // s), -(-w // s)

        def tiles(x: Tensor) -> Tensor:  # pad bottom/right (utils.py:183), cut (B nh nw, 1, s, s)
            x = F.pad(self.to_network_scale(x), (0, nw * s - w, 0, nh * s - h), value=self._pad())
            x = x.view(b, 1, nh, s, nw, s).permute(0, 2, 4, 1, 3, 5)
            return x.reshape(b * nh * nw, 1, s, s)

        out = self.fuse_tiles(tiles(mri), tiles(pet))
        out = out.view(b, nh, nw, 1, s, s).permute(0, 3, 1, 4, 2, 5).reshape(b, 1, nh * s, nw * s)
        return self.finish_output(out[:, :, :h, :w])

    def _pad(self) -> float:
        return float(self._init_args["pad_value"])

    def finish_output(self, img: Tensor) -> Tensor:
        """Per-image min-max stretch and 8-bit truncation of ``save_image_test`` (``utils.py:639``).

        Computed on the published 0..255 scale (``test.py:63``), in its order of operations.
        """
        stretch, quantize = self._init_args["output_stretch"], self._init_args["quantize_output"]
        if img.dtype in (torch.float16, torch.bfloat16):  # under autocast: finish in float32
            img = img.float()
        if not (stretch or quantize):
            return img
        v = img * 255
        if stretch:
            lo = v.amin(dim=(1, 2, 3), keepdim=True)
            span = v.amax(dim=(1, 2, 3), keepdim=True) - lo
            v = torch.where(span > 0, (v - lo) / torch.where(span > 0, span, 1), 0) * 255
        if quantize:
            v = torch.floor(v)
        return v / 255
