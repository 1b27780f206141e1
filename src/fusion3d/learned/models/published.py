"""Weights saved by the published code of each network, as our networks' state_dicts.

One converter per network, all here: a state_dict saved by the published code ->
``(init_args, our state_dict)``, every size the weights fix read from them, every missing,
unexpected or mis-shaped key named (:data:`CONVERTERS`: :func:`convert_dc2fusion`,
:func:`convert_swinfuse`, :func:`convert_matr`, :func:`convert_dilran`), and
:func:`identify_published`, which tells from the keys and shapes which network a
state_dict is (``fusion3d import-weights`` without ``--method``). Every converter accepts
a bare state_dict, one under a common wrapper key and DataParallel's ``module.`` prefix
(:func:`~fusion3d.learned.models.shared.unwrap_state_dict`), and refuses a size key that
its network does not have (:func:`import_keys`).

DC2Fusion (``models/DC2Fusion.py`` of the authors' repository) saves ``model.state_dict()``
of ``DC2Fusion(n_channels=1, embed_dim=96, window_size=(2, 2, 2))``: an outer module
holding ``swin`` (``FusionModel``) and ``out_conv``. Its module names differ from ours and
some of its 1x1 ``Conv3d`` are our ``Linear`` layers; the tables below give the mapping.
Sizes that the shapes fix (spatial dims, in channels, patch, embed_dim, depths, mlp_ratio,
qkv_bias) are read from the weights; the attention heads and the window size leave no
trace in the weights and default to the published ``[3, 6, 12, 24]`` and ``2``. The
published model is a 4-stage U-net (``FusionModel.forward`` indexes the skips with
``3 - inx``); with ``n`` stages and ``last = n - 1``, published decoder index ``u``
(``up_layers.{u}``, coarsest first) is our decoder stage ``last - u``.

SwinFuse, MATR and DILRAN: our parameter and buffer names are the published ones, so the
key map is the identity; the sizes are read from the shapes.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from fusion3d.learned.models.dcfb import DC2Fusion
from fusion3d.learned.models.dilran import DILRAN, DILRAN_UNUSED_PREFIXES
from fusion3d.learned.models.matr import MATR
from fusion3d.learned.models.shared import check_keys, constructor_keys, unwrap_state_dict
from fusion3d.learned.models.swinfuse import SwinFuse

__all__ = [
    "BLOCK_KEYS",
    "CONVERTERS",
    "DROPPED_KEYS",
    "PUBLISHED_HEADS",
    "PUBLISHED_NETWORKS",
    "PUBLISHED_WINDOW",
    "convert_dc2fusion",
    "convert_dilran",
    "convert_matr",
    "convert_swinfuse",
    "check_import_keys",
    "identify_published",
    "import_keys",
    "infer_dc2fusion_sizes",
    "infer_dilran_sizes",
    "infer_matr_sizes",
    "infer_swinfuse_sizes",
    "published_key_map",
]

log = logging.getLogger(__name__)

#: Published network name -> (our architecture key, display name).
PUBLISHED_NETWORKS: dict[str, tuple[str, str]] = {
    "dc2fusion": ("dcfb", "DC2Fusion"),
    "swinfuse": ("swinfuse", "SwinFuse"),
    "matr": ("matr", "MATR"),
    "dilran": ("dilran", "DILRAN"),
}

_MODEL_CLASSES: dict[str, type] = {"swinfuse": SwinFuse, "matr": MATR, "dilran": DILRAN}

#: The keys (and the dimensionality of their tensor) that mark each published state_dict.
_SIGNATURES: dict[str, tuple[tuple[str, int], ...]] = {
    "dc2fusion": (("swin.patch_embed.proj.weight", 0), ("out_conv.weight", 0)),
    "swinfuse": (("patch_embed.proj.weight", 4), ("EN1_0.blocks.0.attn.qkv.weight", 2)),
    "matr": (("convInput.conv1.weight", 4), ("basicLayer.blocks.0.attn.qkv.weight", 2)),
    "dilran": (("fe.conv1.weight", 4), ("fe.fe.reduce.weight", 4)),
}

#: Sizes :func:`convert_dc2fusion` takes (the others of DC2Fusion are fixed: ``variant``
#: ``"published"`` sets every switch).
DC2FUSION_IMPORT_KEYS = (
    "spatial_dims", "in_channels", "patch_size", "embed_dim", "depths", "mlp_ratio",
    "qkv_bias", "num_heads", "window_size", "drop_path_rate",
)  # fmt: skip


def identify_published(state: Any) -> str | None:
    """Which published network a state_dict is (a key of :data:`PUBLISHED_NETWORKS`), or None.

    Read from the keys and the dimensionality of marker tensors (``0``: any), after the
    wrappers and ``module.`` prefix are removed; None when no network, or more than one,
    matches.
    """
    try:
        tensors = unwrap_state_dict(state)
    except ValueError:
        return None
    found = [
        name
        for name, marks in _SIGNATURES.items()
        if all(k in tensors and (nd == 0 or tensors[k].ndim == nd) for k, nd in marks)
    ]
    return found[0] if len(found) == 1 else None


def import_keys(network: str) -> dict[str, Any]:
    """The size keys a converter takes for ``network``, with the default of each.

    The constructor arguments of SwinFuse, MATR and DILRAN; for DC2Fusion the sizes of
    :data:`DC2FUSION_IMPORT_KEYS` (``None``: read from the weights).
    """
    if network == "dc2fusion":
        defaults = {k: None for k in DC2FUSION_IMPORT_KEYS}
        defaults.update(
            num_heads=PUBLISHED_HEADS,
            window_size=PUBLISHED_WINDOW,
            drop_path_rate=PUBLISHED_DROP_PATH,
        )
        return defaults
    return constructor_keys(_MODEL_CLASSES[network])


def check_import_keys(network: str, sizes: Mapping[str, Any]) -> None:
    """ValueError naming every key of ``sizes`` that ``network``'s converter does not take
    (with the new spelling of a renamed one), and the known keys."""
    renamed = getattr(_MODEL_CLASSES.get(network), "renamed_args", None)
    check_keys(PUBLISHED_NETWORKS[network][1], sizes, import_keys(network), renamed)


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


def infer_dc2fusion_sizes(state: dict[str, Tensor], **given) -> dict:
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


def convert_dc2fusion(state: dict[str, Tensor], **sizes) -> tuple[dict, dict[str, Tensor]]:
    """Convert a published state_dict to ``(init_args, our state_dict)``.

    ``sizes`` are optional constructor sizes (see :func:`infer_sizes`). The model is
    ``DC2Fusion(variant="published", ...)``. Raises ``ValueError`` naming a missing or
    unexpected key or a shape mismatch (key and both shapes).
    """
    check_import_keys("dc2fusion", sizes)
    state = unwrap_state_dict(state, "published DC2Fusion weights")
    resolved = infer_dc2fusion_sizes(state, **sizes)
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


# -- MATR (tthinking/MATR) ----------------------------------------------------------------------
_MATR_BLOCK_KEY = "basicLayer.blocks.{}."


def _mode(values: list) -> Any:
    """The most common value (the first seen among ties), ``None`` for no values."""
    return Counter(values).most_common(1)[0][0] if values else None


def infer_matr_sizes(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The constructor arguments that a published state_dict's shapes fix.

    Channels and the kernel from ``convInput.conv1.weight`` / ``convolutional_out``;
    ``embed_dim`` and ``patch_norm`` from ``patch_embed.norm``; ``depth`` from the block
    indices; ``num_heads``, ``window_size``, ``mlp_ratio`` and ``qkv_bias`` as the most
    common value over the blocks (so one mis-shaped block is reported, not the others).
    Keys that are absent leave their size out.
    """
    sizes: dict[str, Any] = {}
    w = state.get("convInput.conv1.weight")
    if w is not None and w.ndim == 4:
        sizes.update(out_channel=w.shape[0], in_channel=w.shape[1], kernel_size=w.shape[2])
    w = state.get("convolutional_out.conv1.weight")
    if w is not None and w.ndim == 4:
        sizes["output_channel"] = w.shape[0]
    norm = [state.get("patch_embed.norm." + n) for n in ("weight", "bias")]
    sizes["patch_norm"] = any(w is not None for w in norm)
    dims = [w.shape[0] for w in norm if w is not None and w.ndim == 1]
    if dims:
        sizes["embed_dim"] = dims[0]
    idx = {int(k.split(".")[2]) for k in state if k.startswith("basicLayer.blocks.")}
    sizes["depth"] = max(idx) + 1 if idx else 0
    heads, windows, ratios, biases = [], [], [], []
    for i in sorted(idx):
        pre = _MATR_BLOCK_KEY.format(i)
        table = state.get(pre + "attn.relative_position_bias_table")
        if table is not None and table.ndim == 2:
            heads.append(table.shape[1])
            windows.append((math.isqrt(table.shape[0]) + 1) // 2)
        fc1 = state.get(pre + "mlp.fc1.weight")
        if fc1 is not None and fc1.ndim == 2 and fc1.shape[1]:
            ratios.append(fc1.shape[0] / fc1.shape[1])
        biases.append(pre + "attn.qkv.bias" in state)
    for key, values in (
        ("num_heads", heads),
        ("window_size", windows),
        ("mlp_ratio", ratios),
        ("qkv_bias", biases),
    ):
        if values:
            sizes[key] = _mode(values)
    return {k: (float(v) if k == "mlp_ratio" else v) for k, v in sizes.items()}


def _compare(ours: Mapping[str, Tensor], theirs: Mapping[str, Tensor]) -> list[str]:
    """Every missing, unexpected and mis-shaped key, one line each."""
    problems = [
        f"missing key {k!r} (expected shape {tuple(v.shape)})"
        for k, v in ours.items()
        if k not in theirs
    ]
    problems += [
        f"unexpected key {k!r} (shape {tuple(v.shape)})" for k, v in theirs.items() if k not in ours
    ]
    problems += [
        f"mis-shaped key {k!r}: expected {tuple(v.shape)}, found {tuple(theirs[k].shape)}"
        for k, v in ours.items()
        if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    return problems


def convert_matr(
    state: Mapping[str, Any], **sizes: Any
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A state_dict saved by the published code -> ``(init_args, our state_dict)``.

    Parameter and buffer names are the published ones, so the key map is the identity.
    Sizes the weights fix are read from them (:func:`infer_matr_sizes`); ``sizes`` may give any
    constructor argument of :class:`MATR` and must agree with what the weights say. The
    rest take the published defaults.

    Parameters
    ----------
    state : dict
        ``torch.load`` of the published checkpoint (e.g. ``models/model_10.pth``); a dict
        wrapping it under ``'state_dict'`` or ``'model'`` and a ``module.`` prefix
        (DataParallel) are accepted.
    **sizes
        Constructor arguments of :class:`MATR`.

    Returns
    -------
    init_args : dict
        ``MATR(**init_args)`` takes ``our_state_dict`` with ``load_state_dict(strict=True)``.
    our_state_dict : dict
        Name -> tensor (copies).

    Raises
    ------
    ValueError
        Unknown size names; a given size contradicting the weights; every missing,
        unexpected and mis-shaped key (key, expected shape, found shape).
    """
    check_import_keys("matr", sizes)
    state = unwrap_state_dict(state, "MATR weights")
    inferred = infer_matr_sizes(state)
    clash = [
        f"{k}={sizes[k]!r} but the weights say {v!r}"
        for k, v in inferred.items()
        if k in sizes and sizes[k] != v
    ]
    if clash:
        raise ValueError("MATR weights: " + "; ".join(clash))
    model = MATR(**{**inferred, **sizes})
    problems = _compare(model.state_dict(), state)
    if problems:
        raise ValueError("MATR weights do not fit the network: " + "; ".join(problems))
    ours = model.state_dict()
    converted = {k: state[k].detach().clone().to(ours[k].dtype) for k in ours}
    return model.init_args, converted


# -- DILRAN (simonZhou86/dilran) ----------------------------------------------------------------
def infer_dilran_sizes(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The sizes that the weights fix (dilations leave no trace in them)."""
    found: dict[str, Any] = {}
    if (w := state.get("fe.conv1.weight")) is not None and w.ndim == 4:
        found["channels"] = int(w.shape[0])
    if (w := state.get("fe.fe.convd1.weight")) is not None and w.ndim == 4:
        found["kernel_size"] = int(w.shape[-1])
    recon = sorted(
        int(k.split(".")[2])
        for k in state
        if k.startswith("recon.recon_conv.") and k.endswith(".weight")
    )
    widths = [int(state[f"recon.recon_conv.{i}.weight"].shape[0]) for i in recon]
    if len(widths) >= 2:
        found["recon_channels"] = widths[:-1]
    found["keep_unused_layers"] = any(k.startswith(DILRAN_UNUSED_PREFIXES) for k in state)
    return found


def convert_dilran(state: Mapping[str, Any], **sizes: Any) -> tuple[dict, dict[str, Tensor]]:
    """A ``model_v5.fullModel`` state_dict -> ``(init_args, our state_dict)``.

    The key names are the published ones (identity map). Sizes that the weights fix
    (``channels``, ``kernel_size``, ``recon_channels``, ``keep_unused_layers``) are read
    from them and checked against ``sizes``; the others (``dilations``, ``inference_norm``,
    ``quantize_input``) come from ``sizes`` or the published defaults.

    Parameters
    ----------
    state : mapping
        ``torch.load`` of e.g. ``pretrained/last.pt``; ``{'state_dict': ...}``,
        ``{'model': ...}`` and a ``module.`` prefix are accepted.
    **sizes
        :class:`DILRAN` constructor arguments.

    Returns
    -------
    (dict, dict)
        The init_args of the matching :class:`DILRAN` and its state_dict.

    Raises
    ------
    ValueError
        A size that disagrees with the weights, or every missing, unexpected and
        mis-shaped key (key, expected shape, found shape).
    """
    check_import_keys("dilran", sizes)
    tensors = unwrap_state_dict(state, "published DILRAN state_dict")
    found = infer_dilran_sizes(tensors)
    clash = [
        f"{k}={sizes[k]!r} (weights: {v!r})"
        for k, v in found.items()
        if k in sizes and (list(sizes[k]) if isinstance(v, list) else sizes[k]) != v
    ]
    if clash:
        raise ValueError(
            "published state_dict: sizes disagree with the weights: " + ", ".join(clash)
        )
    model = DILRAN(**{**sizes, **found})
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad_shape = [
        f"{k} (expected {expected[k]}, found {tuple(tensors[k].shape)})"
        for k in sorted(set(expected) & set(tensors))
        if tuple(tensors[k].shape) != expected[k]
    ]
    problems = [
        f"{label}: {', '.join(items)}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", bad_shape),
        )
        if items
    ]
    if problems:
        raise ValueError("published DILRAN state_dict does not fit: " + "; ".join(problems))
    return model.init_args, {k: tensors[k] for k in expected}


# -- SwinFuse (Zhishe-Wang/SwinFuse) ------------------------------------------------------------
#: Buffers computed from the sizes: filled from the rebuilt module when a checkpoint lacks them.
SWINFUSE_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
_SWINFUSE_BLOCK = re.compile(r"^EN([123])_0\.blocks\.(\d+)\.")


def infer_swinfuse_sizes(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The constructor sizes that the published weights record (``embed_dim``, ``depths``...)."""
    sizes: dict[str, Any] = {}
    if "patch_embed.proj.weight" in state:
        w = state["patch_embed.proj.weight"]
        sizes.update(embed_dim=w.shape[0], in_chans=w.shape[1], patch_size=w.shape[2])
    if "conv.weight" in state:
        sizes["out_chans"] = state["conv.weight"].shape[0]
    blocks: dict[int, set[int]] = {1: set(), 2: set(), 3: set()}
    for k in state:
        m = _SWINFUSE_BLOCK.match(k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    if all(blocks.values()):
        sizes["depths"] = [max(blocks[i]) + 1 for i in (1, 2, 3)]
    heads = [state.get(f"EN{i}_0.blocks.0.attn.relative_position_bias_table") for i in (1, 2, 3)]
    if all(t is not None for t in heads):
        sizes["num_heads"] = [t.shape[1] for t in heads]
        sizes["window_size"] = (math.isqrt(heads[0].shape[0]) + 1) // 2
        mask = state.get("EN1_0.blocks.1.attn_mask")
        if mask is not None:  # (nW, ws^2, ws^2) with nW = (img_size / ws)^2
            sizes["img_size"] = sizes["window_size"] * math.isqrt(mask.shape[0])
    fc1 = state.get("EN1_0.blocks.0.mlp.fc1.weight")
    if fc1 is not None and fc1.shape[1]:
        sizes["mlp_ratio"] = fc1.shape[0] / fc1.shape[1]
    sizes["qkv_bias"] = "EN1_0.blocks.0.attn.qkv.bias" in state
    sizes["patch_norm"] = "patch_embed.norm.weight" in state
    sizes["ape"] = "absolute_pos_embed" in state
    if sizes["ape"]:
        sizes["img_size"] = math.isqrt(state["absolute_pos_embed"].shape[1])
    return {
        k: int(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in sizes.items()
    }


def convert_swinfuse(state: Mapping[str, Any], **sizes: Any) -> tuple[dict, dict[str, Tensor]]:
    """A state_dict saved by the published ``train.py`` -> ``(init_args, our state_dict)``.

    The key map is the identity (the names here are the published ones). Wrappers
    ``{'state_dict': ...}`` / ``{'model': ...}`` and DataParallel's ``module.`` prefix are
    accepted. Sizes the weights record (embed_dim, depths, num_heads, window_size, mlp_ratio,
    qkv_bias, patch_norm, ape, in/out_chans, and img_size when an attention mask or position
    embedding is present) are read from them and checked against ``sizes``; every other
    constructor argument comes from ``sizes`` or its published default.

    Raises
    ------
    ValueError
        A size that contradicts the weights, or the missing, unexpected and mis-shaped keys
        (each with the expected and found shape), all in one message.
    """
    check_import_keys("swinfuse", sizes)
    state = unwrap_state_dict(state, "published SwinFuse weights")
    inferred = infer_swinfuse_sizes(state)
    conflicts = [
        f"{k}: given {sizes[k]!r}, the weights say {v!r}"
        for k, v in inferred.items()
        if k in sizes and (list(sizes[k]) if isinstance(v, list) else sizes[k]) != v
    ]
    if conflicts:
        raise ValueError("published SwinFuse weights: " + "; ".join(conflicts))
    model = SwinFuse(**{**inferred, **sizes})
    ours = model.state_dict()
    missing = [
        f"{k} (expected {tuple(v.shape)})"
        for k, v in ours.items()
        if k not in state and k.rsplit(".", 1)[-1] not in SWINFUSE_DERIVED_BUFFERS
    ]
    unexpected = [f"{k} (found {tuple(v.shape)})" for k, v in state.items() if k not in ours]
    misshaped = [
        f"{k} (expected {tuple(ours[k].shape)}, found {tuple(state[k].shape)})"
        for k in ours
        if k in state and state[k].shape != ours[k].shape
    ]
    problems = [
        f"{label}: {', '.join(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", misshaped),
        )
        if keys
    ]
    if problems:
        raise ValueError("published SwinFuse weights do not fit: " + "; ".join(problems))
    converted = {k: state.get(k, v) for k, v in ours.items()}
    return model.init_args, converted


#: Published network name -> its converter ``(state, **sizes) -> (init_args, state_dict)``.
CONVERTERS: dict[str, Callable[..., tuple[dict, dict[str, Tensor]]]] = {
    "dc2fusion": convert_dc2fusion,
    "swinfuse": convert_swinfuse,
    "matr": convert_matr,
    "dilran": convert_dilran,
}
