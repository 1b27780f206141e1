"""Each network's constructor keys, their defaults and its size rule, in plain Python.

What the driver needs to know of a network to check ``models.<network>`` and the grid
before any job runs, without importing torch or the network's class: the keyword arguments
of the class (``DC2Fusion``, ``SwinFuse``, ``MATR``, ``DILRAN``) with their defaults, and
its ``size_divisor`` (every side of an input must be divisible by it) as arithmetic on the
resolved arguments. ``tests/unit/learned/test_shapes.py`` holds each :class:`NetworkShape`
equal to ``inspect.signature`` of its class and to the ``size_divisor`` of networks built
from it, so that the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SHAPES", "NetworkShape", "shape_for"]


@dataclass(frozen=True)
class NetworkShape:
    """One network's constructor and size rule.

    Attributes
    ----------
    class_name : str
        The network's class (``fusion3d.learned.models``).
    keys : mapping
        Every keyword argument of the class -> its default.
    divisor : callable
        Resolved arguments (``keys`` updated with the config) -> ``size_divisor``.
    """

    class_name: str
    keys: Mapping[str, Any]
    divisor: Callable[[Mapping[str, Any]], int]

    def resolve(self, model_config: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor arguments: the defaults updated with ``model_config``."""
        return {**self.keys, **dict(model_config)}

    def size_divisor(self, model_config: Mapping[str, Any]) -> int:
        """Every side of an input must be divisible by this (TypeError/ValueError for bad values)."""
        return int(self.divisor(self.resolve(model_config)))


def _dcfb_divisor(a: Mapping[str, Any]) -> int:
    # the coarsest stage tiles into whole windows: patch_size * 2**(len(depths) - 1) * window_size
    return int(a["patch_size"]) * 2 ** (len(a["depths"]) - 1) * int(a["window_size"])


def _matr_divisor(a: Mapping[str, Any]) -> int:
    # the blocks' window: window_size, cut to the token grid when that is smaller; 1 without blocks
    if int(a["depth"]) < 1:
        return 1
    resolution = int(a["img_size"]) // int(a["patch_size"])
    return min(resolution, int(a["window_size"]))


#: Architecture key -> its network's shape.
SHAPES: dict[str, NetworkShape] = {
    "dcfb": NetworkShape(
        "DC2Fusion",
        {
            "spatial_dims": 3, "in_channels": 1, "patch_size": 4, "embed_dim": 96,
            "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "window_size": 2,
            "mlp_ratio": 4.0, "drop_path_rate": 0.2, "qkv_bias": True, "variant": "fixed",
            "attention_softmax": None, "attention_proj": None, "sampled_layout": None,
            "conv_pairing": None, "batchnorm_eps": None, "shared_norm": None,
            "reference_grid": None, "offset_scale": None, "sampling_padding": None,
            "upsampling": "transposed",
        },
        _dcfb_divisor,
    ),
    "swinfuse": NetworkShape(
        "SwinFuse",
        {
            "img_size": 224, "patch_size": 1, "in_chans": 1, "out_chans": 1, "embed_dim": 96,
            "depths": (6, 6, 6), "num_heads": (1, 2, 4), "window_size": 7, "mlp_ratio": 4.0,
            "qkv_bias": True, "qk_scale": None, "drop_rate": 0.0, "attn_drop_rate": 0.0,
            "drop_path_rate": 0.2, "ape": False, "patch_norm": True, "use_checkpoint": False,
            "run_all_blocks": False, "freeze_unused": True, "fusion_type": "l1_mean",
            "fusion_eps": 1e-05, "quantize_input": True, "pad_value": 0.0,
            "output_stretch": True, "quantize_output": True,
        },
        lambda a: 1,  # fuse() pads and tiles any size
    ),
    "matr": NetworkShape(
        "MATR",
        {
            "img_size": 120, "patch_size": 4, "embed_dim": 96, "num_heads": 8, "window_size": 1,
            "in_channel": 2, "out_channel": 16, "output_channel": 1, "mlp_ratio": 4.0,
            "qkv_bias": True, "qk_scale": None, "drop": 0.0, "attn_drop": 0.0, "drop_path": 0.0,
            "patch_norm": True, "depth": 3, "kernel_size": 3, "allow_non_square": False,
            "quantize_input": True,
        },
        _matr_divisor,
    ),
    "dilran": NetworkShape(
        "DILRAN",
        {
            "channels": 64, "dilations": (1, 3, 5), "kernel_size": 3, "recon_channels": (64, 32),
            "keep_unused_layers": True, "inference_norm": "slice", "quantize_input": True,
        },
        lambda a: 2,  # 2x2 pooling then 2x upsampling
    ),
}  # fmt: skip


def shape_for(name: str) -> NetworkShape:
    """The shape of an architecture key or of a network method key (via its settings)."""
    from fusion3d.learned.settings import settings_for

    return SHAPES[settings_for(name).architecture]
