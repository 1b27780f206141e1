"""Each architecture's published training settings and their checks, in plain Python.

What the driver (the ``snakemake`` process: config checks and the pre-flight summary) needs
to know of a network's training, without torch: the published ``defaults`` of every
architecture (:data:`COMMON_DEFAULTS` and each :class:`TrainSettings` subclass), the keys
that control a run (:data:`RUN_CONTROL_KEYS`), the checks of every key and
:func:`resolve_train_config`. This module is their one home: each training recipe
(:mod:`fusion3d.learned.recipes`, torch) inherits its architecture's settings class, so that
the recipe and the driver cannot disagree. :func:`settings_for` takes an architecture key
(``"dcfb"``, ``"swinfuse"``, ``"matr"``, ``"dilran"``) or a network method key.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BOOL_KEYS",
    "COMMON_DEFAULTS",
    "MATR_LOSS_TERMS",
    "ROTATION_INTERVALS",
    "RUN_CONTROL_KEYS",
    "SETTINGS",
    "TERMS",
    "DCFBSettings",
    "DilranSettings",
    "MATRSettings",
    "SwinFuseSettings",
    "TrainSettings",
    "check_fusion_loss",
    "check_matr_loss_weights",
    "check_positive_number",
    "resolve_train_config",
    "settings_for",
]

#: Train-config keys every recipe has (a recipe's ``defaults`` give their published values).
COMMON_DEFAULTS: dict[str, Any] = {
    "epochs": 500,
    "lr": 1e-4,
    "seed": 3407,
    "batch_size": 1,
    "augment": False,
    "amp": "auto",
    "slices_per_volume": 8,
    "stop_after_epoch": None,
    "patience": None,
    "val_every": 1,
    "num_workers": 0,
    "cache": True,
    "compile": False,
    "channels_last": False,
    "fused_adam": False,
}

#: Keys that control one run (where it stops, how fast it runs) rather than what is trained:
#: left out of the fingerprint, so a run stopped early resumes, also after switching them.
#: ``patience`` decides only where a run stops, never what an epoch computes: a run stopped
#: by patience and resumed with a larger one (or none) goes on exactly as an uninterrupted
#: run with that patience (the checkpoint counts the checks without improvement whatever
#: the patience). The loader's workers and cache do not change a single number; the
#: throughput switches (compile, channels-last, fused Adam) change floating-point rounding only.
RUN_CONTROL_KEYS = (
    "stop_after_epoch",
    "patience",
    "num_workers",
    "cache",
    "compile",
    "channels_last",
    "fused_adam",
)

#: Common train-config switches that must be true or false.
BOOL_KEYS = ("augment", "cache", "compile", "channels_last", "fused_adam")

#: The terms of DC2Fusion's loss (:class:`fusion3d.learned.losses.FusionLoss`).
TERMS = ("lncc", "ssim", "l1")

#: Rotation intervals of DC2Fusion's augmentation (:mod:`fusion3d.learned.data`).
ROTATION_INTERVALS = ("symmetric", "published")

#: MATR's loss terms in the published order (Train.py:118-122): weight index 0..3 of ``--weight``.
MATR_LOSS_TERMS = ("ssim_pet", "ssim_mri", "rmi_pet", "rmi_mri")


def check_positive_number(cfg: Mapping[str, Any], key: str, *, allow_zero: bool = False) -> float:
    """``cfg[key]`` as a finite float > 0 (>= 0 with ``allow_zero``); ValueError names the key."""
    v = cfg[key]
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"train_config[{key!r}] must be a number {bound}, got {v!r}")
    return float(v)


def check_fusion_loss(weights: Mapping[str, float], terms) -> tuple[dict[str, float], tuple]:
    """DC2Fusion's loss weights (exactly ``mri`` and ``pet``) and terms (a non-empty subset
    of :data:`TERMS`), as ``(weights, terms)``; ValueError otherwise."""
    weights = dict(weights)
    if set(weights) != {"mri", "pet"}:
        raise ValueError(
            f"loss weights need exactly the keys 'mri' and 'pet', got {sorted(weights)}"
        )
    terms = tuple(terms)
    bad = [t for t in terms if t not in TERMS]
    if bad or not terms:
        raise ValueError(f"loss terms must be a non-empty subset of {TERMS}, got {terms}")
    return {k: float(v) for k, v in weights.items()}, terms


def check_matr_loss_weights(weights: Any) -> dict[str, float]:
    """``{term: float >= 0}`` for exactly :data:`MATR_LOSS_TERMS`; ValueError names the problem."""
    if not isinstance(weights, Mapping) or set(weights) != set(MATR_LOSS_TERMS):
        got = sorted(weights) if isinstance(weights, Mapping) else weights
        raise ValueError(
            f"train_config['loss_weights'] must map exactly {list(MATR_LOSS_TERMS)} to numbers, "
            f"got {got!r}"
        )
    return {k: check_positive_number(weights, k, allow_zero=True) for k in MATR_LOSS_TERMS}


def _check_bool(cfg: Mapping[str, Any], key: str) -> None:
    if not isinstance(cfg[key], bool):
        raise ValueError(f"train_config[{key!r}] must be true or false, got {cfg[key]!r}")


def _check_int(cfg: Mapping[str, Any], key: str) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"train_config[{key!r}] must be a positive integer, got {v!r}")
    return v


class TrainSettings:
    """The published training settings of one architecture and the checks of its own keys.

    Subclasses set ``architecture`` and ``defaults`` and may override :meth:`check_config`;
    each training recipe (:class:`fusion3d.learned.recipes.Recipe`) inherits them.
    """

    architecture: str = ""
    defaults: Mapping[str, Any] = {}

    def all_defaults(self) -> dict[str, Any]:
        """:data:`COMMON_DEFAULTS` updated with this recipe's published ``defaults``."""
        return {**COMMON_DEFAULTS, **dict(self.defaults)}

    def check_config(self, cfg: dict[str, Any], model_config: Mapping[str, Any]) -> None:
        """Check (and normalise in place) this recipe's own keys of the resolved ``cfg``.

        Raises ValueError naming the key. The common keys are checked by
        :func:`resolve_train_config`.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.architecture}>"


def _resolve_rotation_interval(value: str | None, model_config: Mapping[str, Any]) -> str:
    """``None`` -> the model's variant decides (``published`` -> ``published``)."""
    if value is None:
        variant = (model_config or {}).get("variant", "fixed")
        return "published" if variant == "published" else "symmetric"
    if value not in ROTATION_INTERVALS:
        raise ValueError(
            f"train_config['rotation_interval'] must be null or one of {ROTATION_INTERVALS}, "
            f"got {value!r}"
        )
    return value


class DCFBSettings(TrainSettings):
    """DC2Fusion's published settings (louelin/DC2Fusion and the paper, ``../shared/PAPER.md``)."""

    architecture = "dcfb"
    defaults = {
        "epochs": 500,  # paper, "Training"
        "lr": 1e-4,  # paper; published train.py
        "batch_size": 1,
        "augment": True,  # published MONAI transforms (fusion3d.learned.data.augment_pair)
        "poly_power": 0.9,  # published poly learning-rate decay
        "loss_weights": {"mri": 2.0, "pet": 1.0},  # paper: 2 for the MRI terms, 1 for the PET
        "loss_terms": list(TERMS),
        "rotation_interval": None,
        "calibrate_output": True,
    }

    def check_config(self, cfg: dict[str, Any], model_config: Mapping[str, Any]) -> None:
        cfg["poly_power"] = check_positive_number(cfg, "poly_power", allow_zero=True)
        _check_bool(cfg, "calibrate_output")
        cfg["rotation_interval"] = _resolve_rotation_interval(
            cfg["rotation_interval"], model_config
        )
        cfg["loss_weights"] = {k: float(v) for k, v in dict(cfg["loss_weights"]).items()}
        cfg["loss_terms"] = list(cfg["loss_terms"])
        check_fusion_loss(cfg["loss_weights"], cfg["loss_terms"])


class SwinFuseSettings(TrainSettings):
    """SwinFuse's published settings (the published code: :mod:`fusion3d.learned.recipes.swinfuse`)."""

    architecture = "swinfuse"
    defaults = {
        "epochs": 50,  # args_fusion.py:3
        "lr": 1e-5,  # args_fusion.py:22, train.py:49
        "batch_size": 2,  # pairs: 2 MRI + 2 PET = the 4 images of args_fusion.py:4
        "seed": 42,  # args_fusion.py:18 (defined; train.py never seeds)
        "augment": False,  # train.py: no augmentation
        "betas": [0.9, 0.999],  # train.py:49 Adam(params, lr): PyTorch's defaults
        "eps": 1e-8,  # idem
        "weight_decay": 0.0,  # idem
        "ssim_weight": 1000.0,  # args_fusion.py:19 ssim_weight[i], i = 3 (train.py:28)
        "msssim_normalize": True,  # train.py:91 msssim(..., normalize=True)
        "eight_bit": True,  # utils.py:117 imread(path, mode='L')
        "train_stretch": True,  # utils.py:121 imresize (byte-scales a float image)
        "train_resize": True,  # utils.py:121 imresize(image, [224, 224], 'nearest')
    }

    def check_config(self, cfg: dict[str, Any], model_config: Mapping[str, Any]) -> None:
        cfg["ssim_weight"] = check_positive_number(cfg, "ssim_weight", allow_zero=True)
        cfg["eps"] = check_positive_number(cfg, "eps")
        cfg["weight_decay"] = check_positive_number(cfg, "weight_decay", allow_zero=True)
        betas = cfg["betas"]
        if not (isinstance(betas, list | tuple) and len(betas) == 2):
            raise ValueError(f"train_config['betas'] must be two numbers, got {betas!r}")
        for b in betas:
            if not isinstance(b, int | float) or isinstance(b, bool) or not 0 <= b < 1:
                raise ValueError(f"train_config['betas'] must be in [0, 1), got {betas!r}")
        cfg["betas"] = [float(b) for b in betas]
        for key in ("msssim_normalize", "eight_bit", "train_stretch", "train_resize"):
            _check_bool(cfg, key)


def _check_betas(cfg: Mapping[str, Any]) -> list[float]:
    """Two numbers in [0, 1); ValueError names ``betas``."""
    b = cfg["betas"]
    ok = isinstance(b, list | tuple) and len(b) == 2
    ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in b)
    if not ok or not all(0.0 <= float(x) < 1.0 for x in b):
        raise ValueError(f"train_config['betas'] must be two numbers in [0, 1), got {b!r}")
    return [float(x) for x in b]


class MATRSettings(TrainSettings):
    """MATR's published settings (:mod:`fusion3d.learned.recipes.matr`). Constant lr."""

    architecture = "matr"
    defaults = {
        "epochs": 10,  # Train.py:30
        "batch_size": 64,  # Train.py:31
        "lr": 1e-3,  # Train.py:32
        # Train.py:33 --weight [1, 1, 1, 2.5], applied in Train.py:118-121 in this order
        "loss_weights": {"ssim_pet": 1.0, "ssim_mri": 1.0, "rmi_pet": 1.0, "rmi_mri": 2.5},
        "betas": [0.9, 0.999],  # Train.py:34, passed to optim.Adam in Train.py:196-197
        "eps": 1e-8,  # Train.py:35
        # Train.py:56-63: ToTensor only (the Normalize of Train.py:170-173 is never applied)
        "augment": False,
    }

    def check_config(self, cfg: dict[str, Any], model_config: Mapping[str, Any]) -> None:
        cfg["loss_weights"] = check_matr_loss_weights(cfg["loss_weights"])
        cfg["betas"] = _check_betas(cfg)
        cfg["eps"] = check_positive_number(cfg, "eps")


class DilranSettings(TrainSettings):
    """DILRAN's published settings (the published code: :mod:`fusion3d.learned.recipes.dilran`)."""

    architecture = "dilran"
    defaults = {
        "epochs": 100,  # train_with_val.py:37 (README.md:26 --epochs 100)
        "lr": 1e-4,  # train_with_val.py:38
        "seed": 3407,  # train_with_val.py:45
        "batch_size": 2,  # pairs -> 4 images: train_with_val.py:36 (README.md:26 --batch_size 4)
        "augment": False,  # dataset_loader.py:81-96 (no augmentation)
        "betas": [0.9, 0.999],  # train_with_val.py:97 optim.Adam(params, lr): PyTorch defaults
        "eps": 1e-8,  # train_with_val.py:97 (PyTorch default)
        "weight_decay": 0.0,  # train_with_val.py:97 (PyTorch default)
        "lambda1": 0.2,  # README.md:26 --lambda1 0.2 (argparse default 0.5: train_with_val.py:41)
        "lambda2": 0.2,  # README.md:26 --lambda2 0.2 (argparse default 0.5: train_with_val.py:42)
        "perceptual_blocks": [0, 1, 2],  # meta_config.py:21 block_idx
        "perceptual_weights": None,  # published: ImageNet download (train_with_val.py:104)
        "lr_decay": False,  # train_with_val.py:39
        "lr_step": 100,  # train_with_val.py:100 StepLR(step_size=100, gamma=0.5)
        "lr_gamma": 0.5,  # train_with_val.py:100
    }

    def check_config(self, cfg: dict[str, Any], model_config: Mapping[str, Any]) -> None:
        for key in ("lambda1", "lambda2", "weight_decay"):
            cfg[key] = check_positive_number(cfg, key, allow_zero=True)
        cfg["eps"] = check_positive_number(cfg, "eps")
        cfg["lr_gamma"] = check_positive_number(cfg, "lr_gamma")
        cfg["lr_step"] = _check_int(cfg, "lr_step")
        betas = cfg["betas"]
        if not isinstance(betas, list | tuple) or len(betas) != 2:
            raise ValueError(f"train_config['betas'] must be two numbers in [0, 1), got {betas!r}")
        cfg["betas"] = [
            check_positive_number({"betas": b}, "betas", allow_zero=True) for b in betas
        ]
        _check_bool(cfg, "lr_decay")
        blocks = cfg["perceptual_blocks"]
        if not isinstance(blocks, list | tuple) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 4 for b in blocks
        ):
            raise ValueError(
                f"train_config['perceptual_blocks'] must be a list of 0..4, got {blocks!r}"
            )
        cfg["perceptual_blocks"] = list(blocks)
        path = cfg["perceptual_weights"]
        if path is not None and not Path(str(path)).is_file():
            raise ValueError(f"train_config['perceptual_weights']: no file {path!r}")


#: Architecture key -> its settings.
SETTINGS: dict[str, TrainSettings] = {
    s.architecture: s
    for s in (DCFBSettings(), SwinFuseSettings(), MATRSettings(), DilranSettings())
}


def settings_for(name: str) -> TrainSettings:
    """The settings of an architecture key or of a network method key (ValueError otherwise)."""
    from fusion3d.methods import BY_NAME

    method = BY_NAME.get(name)
    arch = method.architecture if method is not None and method.architecture else name
    if arch not in SETTINGS:
        known = sorted(set(SETTINGS) | {m.name for m in BY_NAME.values() if m.architecture})
        raise ValueError(f"no training recipe for {name!r}; known: {known}")
    return SETTINGS[arch]


def resolve_train_config(
    train_config: dict | None,
    model_config: dict | None = None,
    recipe: TrainSettings | None = None,
) -> dict:
    """The recipe's defaults (``recipe.all_defaults()``: the published settings) updated with
    ``train_config``, every key checked (ValueError names it). ``recipe``: a recipe or the
    settings of an architecture; DC2Fusion's by default.

    For DC2Fusion, ``rotation_interval`` ``None`` (default) follows the model config's
    ``variant``: ``"published"`` for ``variant: published``, else ``"symmetric"``.
    """
    recipe = recipe or SETTINGS["dcfb"]
    cfg = copy.deepcopy(recipe.all_defaults())
    train_config = dict(train_config or {})
    unknown = sorted(set(train_config) - set(cfg))
    if unknown:
        raise ValueError(
            f"train_config: unknown key(s) {unknown} for {recipe.architecture}; allowed: {sorted(cfg)}"
        )
    cfg.update(copy.deepcopy(train_config))
    _check_common_keys(cfg)
    recipe.check_config(cfg, dict(model_config or {}))
    return cfg


def _check_common_keys(cfg: dict) -> None:
    """Check (and normalise in place) the keys every recipe has."""
    for key in ("epochs", "batch_size", "slices_per_volume", "val_every"):
        _check_int(cfg, key)
    for key in BOOL_KEYS:
        _check_bool(cfg, key)
    workers = cfg["num_workers"]
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"train_config['num_workers'] must be an integer >= 0, got {workers!r}")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise ValueError(f"train_config['seed'] must be an integer, got {cfg['seed']!r}")
    if not (isinstance(cfg["lr"], int | float) and math.isfinite(cfg["lr"]) and cfg["lr"] > 0):
        raise ValueError(f"train_config['lr'] must be a positive number, got {cfg['lr']!r}")
    if cfg["amp"] not in ("auto", "bf16", "off", True, False):
        raise ValueError(f"train_config['amp'] must be 'auto', 'bf16' or 'off', got {cfg['amp']!r}")
    for key in ("stop_after_epoch", "patience"):
        v = cfg[key]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"train_config[{key!r}] must be None or a positive integer, got {v!r}")
    cfg["lr"] = float(cfg["lr"])  # 1 and 1.0: one fingerprint
