"""Import weights trained with the published DC2Fusion code into ``DC2Fusion(variant="published")``.

The published code (``models/DC2Fusion.py`` of the authors' repository) saves
``model.state_dict()`` of ``DC2Fusion(n_channels=1, embed_dim=96, window_size=(2, 2, 2))``:
an outer module holding ``swin`` (``FusionModel``) and ``out_conv``. Its module names
differ from ours and some of its 1x1 ``Conv3d`` are our ``Linear`` layers; the tables
below give the mapping, and :func:`convert_state_dict` applies it. Sizes that the shapes
fix (spatial dims, in channels, patch, embed_dim, depths, mlp_ratio, qkv_bias) are read
from the weights; the attention heads and the window size leave no trace in the weights
and default to the published ``[3, 6, 12, 24]`` and ``2``.

The published model is a 4-stage U-net (``FusionModel.forward`` indexes the skips with
``3 - inx``); with ``n`` stages and ``last = n - 1``, published decoder index ``u``
(``up_layers.{u}``, coarsest first) is our decoder stage ``last - u``.
"""

from __future__ import annotations

import logging
import os
import re

import torch
from torch import Tensor

__all__ = [
    "BLOCK_KEYS",
    "DROPPED_KEYS",
    "PUBLISHED_HEADS",
    "PUBLISHED_WINDOW",
    "convert_state_dict",
    "import_published_weights",
    "infer_sizes",
    "published_key_map",
]

log = logging.getLogger(__name__)

#: The published defaults that the weights do not record.
PUBLISHED_HEADS = [3, 6, 12, 24]
PUBLISHED_WINDOW = 2
PUBLISHED_DROP_PATH = 0.2

#: Inside one block: published key (below ``swin.layers.{i}.blocks.{j}.`` or
#: ``swin.up_layers.{u}.blocks.{j}.``) -> (our key below ``encoder.{i}.blocks.{j}.`` or
#: ``decoder.{last - u}.blocks.{j}.``, transform). Transforms: ``copy``; ``1x1`` (a 1x1
#: ``Conv3d`` weight ``(O, I, 1, 1, 1)`` becomes a ``Linear`` weight ``(O, I)``);
#: ``rows0`` / ``rows1`` (the first / second half of a tensor stacked along dim 0).
BLOCK_KEYS: dict[str, tuple[str, str]] = {
    # LayerNorm of the block input; the published block reuses it for the attention
    # output and the MLP input (our norm_attn and norm2 do not exist with shared_norm).
    "norm1.weight": ("norm1.weight", "copy"),
    "norm1.bias": ("norm1.bias", "copy"),
    # Attention: Q and V are one Linear(C -> 2C) here, Q first.
    "cross_attn.q.weight": ("qv.weight", "rows0"),
    "cross_attn.q.bias": ("qv.bias", "rows0"),
    "cross_attn.v.weight": ("qv.weight", "rows1"),
    "cross_attn.v.bias": ("qv.bias", "rows1"),
    "cross_attn.k.weight": ("k.weight", "copy"),
    "cross_attn.k.bias": ("k.bias", "copy"),
    # Computed and discarded by the published block: kept, unused with attention_proj=False.
    "cross_attn.proj.weight": ("attn_proj.weight", "copy"),
    "cross_attn.proj.bias": ("attn_proj.bias", "copy"),
    # Deformable offsets: proj_q (1x1 conv 2C -> 2C), then conv_offset =
    # [depthwise k3, LayerNormProxy, GELU, 1x1 conv 2C -> 3 without bias].
    "proj_q.weight": ("sampler.proj_in.weight", "1x1"),
    "proj_q.bias": ("sampler.proj_in.bias", "copy"),
    "conv_offset.0.weight": ("sampler.dwconv.weight", "copy"),
    "conv_offset.0.bias": ("sampler.dwconv.bias", "copy"),
    "conv_offset.1.norm.weight": ("sampler.norm.weight", "copy"),
    "conv_offset.1.norm.bias": ("sampler.norm.bias", "copy"),
    "conv_offset.3.weight": ("sampler.offset.weight", "1x1"),
    # Conv branch: dwconv3x3 = [grouped k7 conv 2C -> C, LazyBatchNorm3d, GELU].
    "dwconv3x3.0.weight": ("conv_mix.weight", "copy"),
    "dwconv3x3.0.bias": ("conv_mix.bias", "copy"),
    "dwconv3x3.1.weight": ("conv_norm.weight", "copy"),
    "dwconv3x3.1.bias": ("conv_norm.bias", "copy"),
    "dwconv3x3.1.running_mean": ("conv_norm.running_mean", "copy"),
    "dwconv3x3.1.running_var": ("conv_norm.running_var", "copy"),
    "dwconv3x3.1.num_batches_tracked": ("conv_norm.num_batches_tracked", "copy"),
    "projection.weight": ("conv_proj.weight", "1x1"),
    "projection.bias": ("conv_proj.bias", "copy"),
    # Channel gate: [avg pool, 1x1 C -> C/8, LayerNormProxy, GELU, 1x1 C/8 -> C] (+ sigmoid).
    "channel_interaction.1.weight": ("channel_gate.fc1.weight", "1x1"),
    "channel_interaction.1.bias": ("channel_gate.fc1.bias", "copy"),
    "channel_interaction.2.norm.weight": ("channel_gate.norm.weight", "copy"),
    "channel_interaction.2.norm.bias": ("channel_gate.norm.bias", "copy"),
    "channel_interaction.4.weight": ("channel_gate.fc2.weight", "1x1"),
    "channel_interaction.4.bias": ("channel_gate.fc2.bias", "copy"),
    # Spatial gate: [1x1 C -> C/8, LayerNormProxy, GELU, 1x1 C/8 -> 1] (+ sigmoid).
    "spatial_interaction.0.weight": ("spatial_gate.fc1.weight", "1x1"),
    "spatial_interaction.0.bias": ("spatial_gate.fc1.bias", "copy"),
    "spatial_interaction.1.norm.weight": ("spatial_gate.norm.weight", "copy"),
    "spatial_interaction.1.norm.bias": ("spatial_gate.norm.bias", "copy"),
    "spatial_interaction.3.weight": ("spatial_gate.fc2.weight", "1x1"),
    "spatial_interaction.3.bias": ("spatial_gate.fc2.bias", "copy"),
    # Blend of the two branches and the MLP.
    "proj.weight": ("blend.weight", "copy"),
    "proj.bias": ("blend.bias", "copy"),
    "mlp.fc1.weight": ("mlp.fc1.weight", "copy"),
    "mlp.fc1.bias": ("mlp.fc1.bias", "copy"),
    "mlp.fc2.weight": ("mlp.fc2.weight", "copy"),
    "mlp.fc2.bias": ("mlp.fc2.bias", "copy"),
}

#: Published parameters that its forward pass never uses: dropped with a log line.
#: ``concat_back_dim.0`` is the bottleneck ``Linear(16 E -> 8 E)`` (1536 -> 768 at paper
#: size): the coarsest decoder stage has no skip, so the loop never calls it.
DROPPED_KEYS = ("swin.concat_back_dim.0.weight", "swin.concat_back_dim.0.bias")

_WB = ("weight", "bias")


def published_key_map(depths: list[int]) -> dict[str, tuple[str, str]]:
    """The full mapping for ``depths``: published key -> (our key, transform).

    Outside the blocks:

    ========================================================  ==========================
    published                                                 ours
    ========================================================  ==========================
    ``swin.patch_embed.proj``                                 ``patch_embed``
    ``swin.layers.{i}.downsample.down_conv`` / ``.norm``      ``downsample.{i}.conv`` / ``.norm``
    ``swin.norm``                                             ``bottleneck_norm``
    ``swin.concat_back_dim.{u}`` (u >= 1)                     ``skip_proj.{last - u}``
    ``swin.up_layers.{u}.downsample.up_conv`` / ``.norm``     ``upsample.{last - u - 1}.conv`` / ``.norm``
    ``swin.norm2``                                            ``head_norm``
    ``swin.reverse_patch_embedding``                          ``head_up``
    ``out_conv``                                              ``head_out``
    ========================================================  ==========================

    :data:`DROPPED_KEYS` are not in the map.
    """
    last = len(depths) - 1
    out: dict[str, tuple[str, str]] = {}

    def pair(pub: str, ours: str) -> None:
        for wb in _WB:
            out[f"{pub}.{wb}"] = (f"{ours}.{wb}", "copy")

    pair("swin.patch_embed.proj", "patch_embed")
    for i in range(last):
        pair(f"swin.layers.{i}.downsample.down_conv", f"downsample.{i}.conv")
        pair(f"swin.layers.{i}.downsample.norm", f"downsample.{i}.norm")
    pair("swin.norm", "bottleneck_norm")
    for u in range(1, last + 1):
        pair(f"swin.concat_back_dim.{u}", f"skip_proj.{last - u}")
    for u in range(last):
        pair(f"swin.up_layers.{u}.downsample.up_conv", f"upsample.{last - u - 1}.conv")
        pair(f"swin.up_layers.{u}.downsample.norm", f"upsample.{last - u - 1}.norm")
    pair("swin.norm2", "head_norm")
    pair("swin.reverse_patch_embedding", "head_up")
    pair("out_conv", "head_out")
    for stage, depth in enumerate(depths):
        for j in range(depth):
            for pub_prefix, our_prefix in (
                (f"swin.layers.{stage}.blocks.{j}.", f"encoder.{stage}.blocks.{j}."),
                (f"swin.up_layers.{last - stage}.blocks.{j}.", f"decoder.{stage}.blocks.{j}."),
            ):
                for pub, (ours, how) in BLOCK_KEYS.items():
                    out[pub_prefix + pub] = (our_prefix + ours, how)
    return out


def _blocks_per_stage(keys: list[str]) -> list[int]:
    """Count ``swin.layers.{i}.blocks.{j}`` per stage ``i`` (stages 0..n-1, no gaps)."""
    found: dict[int, set[int]] = {}
    for key in keys:
        m = re.match(r"swin\.layers\.(\d+)\.blocks\.(\d+)\.", key)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not found:
        raise ValueError("no encoder blocks (swin.layers.{i}.blocks.{j}.*) in the state_dict")
    depths = []
    for i in range(max(found) + 1):
        blocks = found.get(i, set())
        if not blocks or blocks != set(range(len(blocks))):
            raise ValueError(f"swin.layers.{i}.blocks: blocks {sorted(blocks)} are not 0..n-1")
        depths.append(len(blocks))
    return depths


def _require(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise ValueError(f"published state_dict lacks the key {key!r}")
    return state[key]


def infer_sizes(state: dict[str, Tensor], **given) -> dict:
    """Constructor sizes of :class:`~fusion3d.learned.models.DC2Fusion` read from published weights.

    ``given`` (``spatial_dims``, ``in_channels``, ``patch_size``, ``embed_dim``, ``depths``,
    ``mlp_ratio``, ``qkv_bias``; ``None`` = infer) must agree with the shapes;
    ``num_heads``, ``window_size`` and ``drop_path_rate`` cannot be read from weights and
    default to the published values. Raises ``ValueError`` naming a disagreement.
    """
    pe = _require(state, "swin.patch_embed.proj.weight")  # (E, in, p, p[, p])
    fc1 = _require(state, "swin.layers.0.blocks.0.mlp.fc1.weight")  # (hidden, E)
    depths = _blocks_per_stage(list(state))
    inferred = {
        "spatial_dims": pe.ndim - 2,
        "in_channels": int(pe.shape[1]),
        "patch_size": int(pe.shape[2]),
        "embed_dim": int(pe.shape[0]),
        "depths": depths,
        "mlp_ratio": fc1.shape[0] / fc1.shape[1],
        "qkv_bias": "swin.layers.0.blocks.0.cross_attn.q.bias" in state,
    }
    if len(set(pe.shape[2:])) != 1:
        raise ValueError(f"swin.patch_embed.proj.weight: non-cubic patch {tuple(pe.shape[2:])}")
    for key, value in inferred.items():
        want = given.get(key)
        if want is not None and (list(want) if key == "depths" else want) != value:
            raise ValueError(f"{key}: given {want!r}, but the published weights have {value!r}")
    heads = given.get("num_heads")
    if heads is None:
        if len(depths) != len(PUBLISHED_HEADS):
            raise ValueError(
                f"num_heads: the weights have {len(depths)} stages; give num_heads "
                f"(the published default {PUBLISHED_HEADS} has {len(PUBLISHED_HEADS)})"
            )
        heads = PUBLISHED_HEADS
    window = given.get("window_size")
    drop = given.get("drop_path_rate")
    return {
        **inferred,
        "num_heads": [int(h) for h in heads],
        "window_size": PUBLISHED_WINDOW if window is None else int(window),
        "drop_path_rate": PUBLISHED_DROP_PATH if drop is None else float(drop),
    }


def _transform(how: str, value: Tensor) -> Tensor:
    """Apply a :data:`BLOCK_KEYS` transform other than the rows split."""
    if how == "1x1":
        if any(s != 1 for s in value.shape[2:]):
            raise ValueError(f"expected a 1x1 convolution weight, got shape {tuple(value.shape)}")
        return value.reshape(value.shape[0], value.shape[1])
    return value


def _map_state(
    state: dict[str, Tensor], depths: list[int]
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename and reshape published tensors to our keys (halves stacked for ``rows*``).

    Returns our tensors and, for each of our keys, the published key(s) it came from.
    """
    mapping = published_key_map(depths)
    for kind, keys in (
        ("has unexpected key(s)", sorted(set(state) - set(mapping) - set(DROPPED_KEYS))),
        ("lacks the key(s)", sorted(set(mapping) - set(state))),
    ):
        if keys:
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            raise ValueError(f"published state_dict {kind} {keys[:5]}{more}")
    ours: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    halves: dict[str, dict[str, Tensor]] = {}
    for pub, (key, how) in mapping.items():
        source[key] = f"{source[key]} + {pub}" if key in source else pub
        try:
            if how in ("rows0", "rows1"):
                halves.setdefault(key, {})[how] = state[pub]
            else:
                ours[key] = _transform(how, state[pub])
        except ValueError as exc:
            raise ValueError(f"{pub}: {exc}") from exc
    for key, parts in halves.items():
        if parts["rows0"].shape != parts["rows1"].shape:
            raise ValueError(
                f"{source[key]}: shapes {tuple(parts['rows0'].shape)} and "
                f"{tuple(parts['rows1'].shape)} differ"
            )
        ours[key] = torch.cat([parts["rows0"], parts["rows1"]], dim=0)
    return ours, source


def _check_shapes(
    ours: dict[str, Tensor], target: dict[str, Tensor], source: dict[str, str]
) -> None:
    """Raise ``ValueError`` for a key of ``target`` not filled or filled with another shape."""
    missing = sorted(set(target) - set(ours))
    if missing:
        raise ValueError(f"import mapping leaves our key(s) {missing[:5]} without a value")
    for key, value in ours.items():
        if key not in target:
            raise ValueError(f"import mapping gives {key!r}, which our model does not have")
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(
                f"{source[key]} -> {key}: the published weight has shape "
                f"{tuple(value.shape)}, our model expects {tuple(target[key].shape)}"
            )


def convert_state_dict(state: dict[str, Tensor], **sizes) -> tuple[dict, dict[str, Tensor]]:
    """Convert a published state_dict to ``(init_args, our state_dict)``.

    ``sizes`` are optional constructor sizes (see :func:`infer_sizes`). The model is
    ``DC2Fusion(variant="published", ...)``. Raises ``ValueError`` naming a missing or
    unexpected key or a shape mismatch (key and both shapes).
    """
    from fusion3d.learned.models.dcfb import DC2Fusion

    state = {k.removeprefix("module."): v for k, v in state.items()}
    resolved = infer_sizes(state, **sizes)
    ours, source = _map_state(state, resolved["depths"])
    model = DC2Fusion(variant="published", **resolved)
    _check_shapes(ours, model.state_dict(), source)
    for key in DROPPED_KEYS:
        if key in state:
            log.info(
                "dropped %s %s: the published forward pass never uses it",
                key,
                tuple(state[key].shape),
            )
    model.load_state_dict(ours)
    return model.init_args, model.state_dict()


def import_published_weights(src: str | os.PathLike, out: str | os.PathLike, **sizes) -> dict:
    """Convert published DC2Fusion weights ``src`` into our checkpoint ``out`` (written
    atomically): :func:`fusion3d.learned.weights.import_weights` with ``method="dc2fusion"``.

    The checkpoint is ``{"method": "dcfb", "init_args": init_args, "model_state":
    state_dict, "variant": "published", "source": <file name of src>}``, which
    :func:`fusion3d.learned.inference.load_model` reads. Returns ``init_args``.
    """
    from fusion3d.learned.weights import import_weights

    return import_weights("dc2fusion", src, out, **sizes)
