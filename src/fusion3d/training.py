"""Train DC2Fusion (2D or 3D) with checkpointing, exact resume and validation-based selection.

The stage, step by step (:func:`train_model`):

1. resolve the configs (:func:`resolve_train_config`; the rotation interval follows the
   model's ``variant`` unless set);
2. prepare the data (:func:`prepare_data`: the training and validation pairs);
3. build the model, loss, optimizer and poly schedule (:func:`build_training`);
4. resume or start (:func:`resume_or_start`): ``checkpoints/last.pt`` is resumed only when
   its fingerprint (:func:`training_fingerprint`: the split rows, the resolved model
   config and the resolved training config) equals this run's; otherwise the old state
   is set aside in ``stale-<UTC time>/`` (never deleted) with a log line naming what
   changed, and training starts fresh;
5. the epoch loop (:func:`train_epoch` over the batches of :func:`epoch_batches`);
6. validate and select (:func:`validation_scores`, :func:`validate_and_select`);
7. checkpoint (:func:`save_checkpoints`).

Writes under ``out_dir``: ``checkpoints/last.pt`` (every epoch), ``model.pt`` (best
validation score), ``history.csv`` (one row per epoch; row 0 scores the
initialisation). Every file is written atomically; every checkpoint loads with
``torch.load(..., weights_only=True)`` and is self-describing: ``init_args`` (the fully
resolved constructor arguments of :class:`~fusion3d.models.DC2Fusion`), ``variant`` and
``fingerprint``, so :func:`fusion3d.inference.load_model` rebuilds the network from the
file alone.

Reproducibility: the model is initialised from ``seed``; every epoch reseeds torch,
numpy and ``random`` from ``(seed, epoch)``, so a run stopped after epoch k and
resumed from ``last.pt`` ends with exactly the weights of an uninterrupted run (CPU).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import inspect
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fusion3d.inference import autocast_context, fuse_volume, resolve_device
from fusion3d.io import atomic_path
from fusion3d.losses import TERMS, FusionLoss, psnr, ssim
from fusion3d.models import DC2Fusion, build_model
from fusion3d.training_data import (
    ROTATION_INTERVALS,
    AugmentConfig,
    VolumePair,
    augment_pair,
    foreground_slices,
    load_items,
)

__all__ = [
    "DEFAULT_TRAIN_CONFIG",
    "StatePaths",
    "TrainingRun",
    "build_training",
    "calibrate_output_scale",
    "epoch_batches",
    "fingerprint_changes",
    "model_init_args",
    "prepare_data",
    "resolve_train_config",
    "resume_or_start",
    "save_checkpoints",
    "set_aside_state",
    "train_epoch",
    "train_model",
    "training_fingerprint",
    "validate_and_select",
    "validation_scores",
]

log = logging.getLogger(__name__)

DEFAULT_TRAIN_CONFIG: dict = {
    "epochs": 500,
    "lr": 1e-4,
    "poly_power": 0.9,
    "seed": 3407,
    "batch_size": 1,
    "loss_weights": {"mri": 2.0, "pet": 1.0},
    "loss_terms": list(TERMS),
    "augment": True,
    "rotation_interval": None,
    "amp": "auto",
    "slices_per_volume": 8,
    "stop_after_epoch": None,
    "calibrate_output": True,
}

#: Keys that control one run (where it stops) rather than what is trained: left out of the
#: fingerprint, so a run stopped early resumes.
RUN_CONTROL_KEYS = ("stop_after_epoch",)

Item = tuple[str, str | os.PathLike, str | os.PathLike]


# ---------------------------------------------------------------------------------------------
# 1. Resolve the configs
# ---------------------------------------------------------------------------------------------


def resolve_train_config(train_config: dict | None, model_config: dict | None = None) -> dict:
    """Merge with :data:`DEFAULT_TRAIN_CONFIG` and check every key (ValueError names it).

    ``rotation_interval`` ``None`` (default) follows the model config's ``variant``:
    ``"published"`` for ``variant: published``, else ``"symmetric"``.
    """
    cfg = copy.deepcopy(DEFAULT_TRAIN_CONFIG)
    train_config = dict(train_config or {})
    unknown = sorted(set(train_config) - set(cfg))
    if unknown:
        raise ValueError(f"train_config: unknown key(s) {unknown}; allowed: {sorted(cfg)}")
    cfg.update(copy.deepcopy(train_config))
    for key in ("epochs", "batch_size", "slices_per_volume"):
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"train_config[{key!r}] must be a positive integer, got {v!r}")
    if not isinstance(cfg["seed"], int):
        raise ValueError(f"train_config['seed'] must be an integer, got {cfg['seed']!r}")
    if not (isinstance(cfg["lr"], int | float) and math.isfinite(cfg["lr"]) and cfg["lr"] > 0):
        raise ValueError(f"train_config['lr'] must be a positive number, got {cfg['lr']!r}")
    power = cfg["poly_power"]
    if not (isinstance(power, int | float) and math.isfinite(power) and power >= 0):
        raise ValueError(
            f"train_config['poly_power'] must be a number >= 0 (0: constant lr), got {power!r}"
        )
    if cfg["amp"] not in ("auto", "bf16", "off", True, False):
        raise ValueError(f"train_config['amp'] must be 'auto', 'bf16' or 'off', got {cfg['amp']!r}")
    if cfg["stop_after_epoch"] is not None and (
        not isinstance(cfg["stop_after_epoch"], int) or cfg["stop_after_epoch"] < 1
    ):
        raise ValueError(
            f"train_config['stop_after_epoch'] must be None or a positive integer, "
            f"got {cfg['stop_after_epoch']!r}"
        )
    cfg["lr"], cfg["poly_power"] = float(cfg["lr"]), float(power)  # 1 and 1.0: one fingerprint
    cfg["rotation_interval"] = _resolve_rotation_interval(cfg["rotation_interval"], model_config)
    cfg["loss_weights"] = {k: float(v) for k, v in dict(cfg["loss_weights"]).items()}
    cfg["loss_terms"] = list(cfg["loss_terms"])
    cfg["augment"] = bool(cfg["augment"])
    cfg["calibrate_output"] = bool(cfg["calibrate_output"])
    FusionLoss(3, cfg["loss_weights"], cfg["loss_terms"])  # validates weights and terms
    return cfg


def _resolve_rotation_interval(value: str | None, model_config: dict | None) -> str:
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


def _plain(value):
    """Tuples and lists as lists, recursively (primitive, comparable, weights_only-safe)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def model_init_args(model: DC2Fusion, model_config: dict) -> dict:
    """The fully resolved constructor arguments of ``model`` (plain values).

    The model's own ``init_args`` when it records them; else ``model_config`` completed
    with the defaults of :class:`~fusion3d.models.DC2Fusion`'s signature, so a later change
    of a default cannot change what a checkpoint rebuilds.
    """
    recorded = getattr(model, "init_args", None)
    if recorded:
        return _plain(dict(recorded))
    signature = inspect.signature(type(model).__init__)
    resolved = {
        name: p.default
        for name, p in signature.parameters.items()
        if name != "self" and p.default is not inspect.Parameter.empty
    }
    resolved.update(model_config)
    return _plain(resolved)


# ---------------------------------------------------------------------------------------------
# Fingerprint of a run: what a checkpoint belongs to
# ---------------------------------------------------------------------------------------------


def _split_rows(train_items: Sequence[Item], val_items: Sequence[Item]) -> dict:
    """The split rows a run trains on: ``{"train": [[id, mri, pet], ...], "val": [...]}``."""
    return {
        name: [[str(part) for part in item] for item in items]
        for name, items in (("train", train_items), ("val", val_items))
    }


def _sha256_json(value) -> str:
    """SHA-256 of the canonical JSON of ``value`` (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def training_fingerprint(split: dict, init_args: dict, cfg: dict) -> dict:
    """What a run's state belongs to: SHA-256 of each part and of the whole.

    Parameters
    ----------
    split : dict
        The split rows (``{"train": [[subject_id, mri_path, pet_path], ...], "val": [...]}``).
    init_args : dict
        The resolved model config (:func:`model_init_args`).
    cfg : dict
        The resolved training config; :data:`RUN_CONTROL_KEYS` are left out.

    Returns
    -------
    dict
        ``{"split": sha, "model_config": sha, "train_config": sha, "sha256": sha}``.
    """
    parts = {
        "split": _sha256_json(split),
        "model_config": _sha256_json(init_args),
        "train_config": _sha256_json(_fingerprinted_train_config(cfg)),
    }
    return {**parts, "sha256": _sha256_json(parts)}


def _fingerprinted_train_config(cfg: dict) -> dict:
    """The training config without :data:`RUN_CONTROL_KEYS`."""
    return {k: v for k, v in cfg.items() if k not in RUN_CONTROL_KEYS}


def fingerprint_changes(ckpt: dict, run: TrainingRun) -> str | None:
    """What differs between a checkpoint and this run, in words; ``None`` when it belongs to it."""
    old = ckpt.get("fingerprint")
    if not isinstance(old, dict) or "sha256" not in old:
        return "the checkpoint has no fingerprint (written by an older fusion3d)"
    if old["sha256"] == run.fingerprint["sha256"]:
        return None
    changes = []
    if old.get("split") != run.fingerprint["split"]:
        changes.append(_split_changes(ckpt.get("split") or {}, run.split))
    if old.get("model_config") != run.fingerprint["model_config"]:
        changes.append("model config " + _dict_changes(ckpt.get("init_args"), run.init_args))
    if old.get("train_config") != run.fingerprint["train_config"]:
        before = _fingerprinted_train_config(ckpt.get("train_config") or {})
        changes.append(
            "train config " + _dict_changes(before, _fingerprinted_train_config(run.cfg))
        )
    return "; ".join(changes) or "fingerprint differs"


def _dict_changes(old: dict | None, new: dict) -> str:
    """``key old -> new`` for every key that differs."""
    old = _plain(old or {})
    keys = sorted(set(old) | set(new))
    diffs = [
        f"{k} {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
        for k in keys
        if old.get(k, "<unset>") != new.get(k, "<unset>")
    ]
    return ", ".join(diffs) if diffs else "(values equal, types differ)"


def _split_changes(old: dict, new: dict) -> str:
    """Subjects added, removed or with other image paths, per split part."""
    words = []
    for part in ("train", "val"):
        before = {row[0]: row for row in old.get(part, [])}
        after = {row[0]: row for row in new.get(part, [])}
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        moved = sorted(s for s in set(after) & set(before) if after[s] != before[s])
        for label, subjects in (("added", added), ("removed", removed), ("new paths", moved)):
            if subjects:
                shown = ", ".join(subjects[:5]) + (" ..." if len(subjects) > 5 else "")
                words.append(f"{part} {label}: {len(subjects)} ({shown})")
        if not (added or removed or moved) and list(before) != list(after):
            words.append(f"{part}: order of subjects")
    return "split " + ("; ".join(words) if words else "rows differ")


# ---------------------------------------------------------------------------------------------
# Where a run keeps its state, and what it holds in memory
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatePaths:
    """The files of a training state folder (``train/<network>/state/``)."""

    root: Path

    @property
    def last(self) -> Path:
        """``checkpoints/last.pt``: everything needed to resume, written every epoch."""
        return self.root / "checkpoints" / "last.pt"

    @property
    def model(self) -> Path:
        """``model.pt``: the weights of the best validation score."""
        return self.root / "model.pt"

    @property
    def history(self) -> Path:
        """``history.csv``: one row per epoch (row 0 scores the initialisation)."""
        return self.root / "history.csv"


@dataclass
class TrainingRun:
    """The state of one training run: what is trained, with what, and how far it got."""

    model: DC2Fusion
    loss_fn: FusionLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: dict
    init_args: dict
    split: dict
    fingerprint: dict
    start_epoch: int = 1
    best_score: float = -math.inf
    history: list[dict] = field(default_factory=list)

    @property
    def variant(self) -> str:
        """The model's variant (``fixed`` unless the config says otherwise)."""
        return str(self.init_args.get("variant", "fixed"))

    def record(self) -> dict:
        """What every checkpoint of this run carries to describe itself."""
        return {
            "init_args": self.init_args,
            "variant": self.variant,
            "fingerprint": self.fingerprint,
            "train_config": self.cfg,
        }


# ---------------------------------------------------------------------------------------------
# 2. Prepare the data (the data pipeline: pairs in memory, lazy augmented batches)
# ---------------------------------------------------------------------------------------------


def prepare_data(
    train_items: Sequence[Item], val_items: Sequence[Item]
) -> tuple[list[VolumePair], list[VolumePair]]:
    """Load and check the training and validation pairs (same grid for both)."""
    train_pairs = load_items(train_items, what="train_items")
    val_pairs = load_items(val_items, what="val_items") if len(val_items) else []
    if not val_pairs:
        log.warning("no validation items: model.pt is selected on the training loss")
    shape = train_pairs[0].mri.shape
    if val_pairs and val_pairs[0].mri.shape != shape:
        raise ValueError(
            f"{val_items[0][1]}: validation grid {val_pairs[0].mri.shape} differs from training {shape}"
        )
    return train_pairs, val_pairs


def _batches(
    pairs: list[VolumePair], model: DC2Fusion, cfg: dict, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(mri, pet)`` CPU batches ``(B, 1, *S)`` drawn with ``gen``.

    Every draw from ``gen`` (the order, the 2D slices) happens on the first ``next``, before
    any batch is built; batches are then built one at a time, so an epoch never holds a
    second copy of the training volumes.
    """
    # picks: (subject, index into its volumes): the whole volume in 3D, in 2D random
    # foreground slices along the last axis
    if model.spatial_dims == 3:
        picks = [(j, ...) for j in range(len(pairs))]
    else:
        picks = []
        for j, pair in enumerate(pairs):
            fg = foreground_slices(pair.mri)
            sel = torch.randint(len(fg), (cfg["slices_per_volume"],), generator=gen).tolist()
            picks += [(j, (..., int(fg[s]))) for s in sel]
    order = torch.randperm(len(picks), generator=gen).tolist()
    bs = cfg["batch_size"]
    for i in range(0, len(order), bs):
        chosen = [picks[o] for o in order[i : i + bs]]
        m = torch.from_numpy(np.stack([pairs[j].mri[ix] for j, ix in chosen]))[:, None]
        p = torch.from_numpy(np.stack([pairs[j].pet[ix] for j, ix in chosen]))[:, None]
        yield m, p  # (B, 1, D, H, W) in 3D, (B, 1, D, H) in 2D


def epoch_batches(
    pairs: list[VolumePair], model: DC2Fusion, cfg: dict, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of training batches, augmented (``cfg["augment"]``) with ``gen``.

    The augmentation is the published one (:func:`~fusion3d.training_data.augment_pair`),
    with the rotation interval ``cfg["rotation_interval"]``.
    """
    aug = AugmentConfig(rot_interval=cfg["rotation_interval"])
    for mri, pet in _batches(pairs, model, cfg, gen):
        if cfg["augment"]:
            mri, pet = augment_pair(mri, pet, gen, aug)
        yield mri, pet


# ---------------------------------------------------------------------------------------------
# 3. Build the model, loss, optimizer and schedule
# ---------------------------------------------------------------------------------------------


def build_training(
    model_config: dict,
    cfg: dict,
    device: torch.device,
    split: dict,
    grid_shape: tuple[int, ...],
    grid_source: str | os.PathLike = "train_items",
) -> TrainingRun:
    """Build the model (seeded with ``cfg["seed"]``), loss, Adam and the poly schedule.

    ``grid_shape`` (a training volume's shape) is checked against the model's size divisor;
    a ValueError names ``grid_source``.
    """
    torch.manual_seed(cfg["seed"])
    model = build_model(dict(model_config)).to(device)
    grid = grid_shape[:2] if model.spatial_dims == 2 else grid_shape
    if any(s % model.size_divisor for s in grid):
        raise ValueError(
            f"{grid_source}: grid {grid_shape} not divisible by the model's size divisor "
            f"{model.size_divisor} (patch_size * 2**(stages-1) * window_size)"
        )
    loss_fn = FusionLoss(model.spatial_dims, cfg["loss_weights"], cfg["loss_terms"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    epochs, power = cfg["epochs"], cfg["poly_power"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: max(0.0, 1.0 - e / epochs) ** power
    )
    init_args = model_init_args(model, model_config)
    return TrainingRun(
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        cfg=cfg,
        init_args=init_args,
        split=split,
        fingerprint=training_fingerprint(split, init_args, cfg),
    )


def calibrate_output_scale(model: DC2Fusion, mri: torch.Tensor, pet: torch.Tensor) -> float:
    """Rescale the head's last conv so the initial fused image has the sources' mean magnitude.

    The L1NW layer ``F = |f1|_1 f1 + |f2|_1 f2`` multiplies by sums over all voxels, so
    with PyTorch's default initialisation ``|F|`` starts ~``N`` times too large
    (``N`` = voxels) and short trainings spend their budget shrinking it. ``F`` is
    homogeneous of degree 2 in the head's last (linear) conv, so scaling its weight and
    bias by ``s = sqrt(mean((mri + pet) / 2) / mean(|F|))`` sets the initial scale
    exactly. A data-dependent initialisation only: architecture and formula are the
    paper's (switch off with ``train_config["calibrate_output"] = False``).

    Parameters
    ----------
    model : DC2Fusion
    mri, pet : Tensor
        One batch ``(B, 1, *S)`` on the model's device.

    Returns
    -------
    float
        The factor ``s`` applied.
    """
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with torch.no_grad():
        fused = model(mri, pet).float()
        current = float(fused.abs().mean())
        target = float(((mri + pet) / 2).float().mean())
        if not (math.isfinite(current) and current > 0 and target > 0):
            return 1.0
        s = math.sqrt(target / current)
        model.head_out.weight.mul_(s)
        if model.head_out.bias is not None:
            model.head_out.bias.mul_(s)
        for name, buf in model.named_buffers():  # undo BatchNorm running-stat updates
            buf.copy_(buffers[name])
    return s


# ---------------------------------------------------------------------------------------------
# 4. Resume or start
# ---------------------------------------------------------------------------------------------


def _rng_state() -> dict:
    """Every global RNG state (torch, numpy, random) as weights_only-safe values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(state: dict) -> None:
    """Restore the global RNG states saved by :func:`_rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Reseed every global RNG from ``(seed, epoch)``; return the data generator."""
    s = (seed * 1_000_003 + epoch) % (2**63)
    torch.manual_seed(s)
    np.random.seed(s % (2**32))
    random.seed(s)
    return torch.Generator().manual_seed(s)


def set_aside_state(root: Path, reason: str) -> Path:
    """Move everything in the state folder ``root`` (but earlier ``stale-*`` folders) aside.

    The old state goes to ``root/stale-<UTC time>/``; nothing is deleted. Returns that folder.
    """
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = root / f"stale-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = root / f"stale-{stamp}-{n}"
    target.mkdir(parents=True)
    for entry in sorted(root.iterdir()):
        if entry != target and not entry.name.startswith("stale-"):
            entry.rename(target / entry.name)
    log.warning(
        "%s: training state belongs to another run (%s); set aside in %s, training starts fresh",
        root,
        reason,
        target,
    )
    return target


def _read_checkpoint(path: Path) -> tuple[dict | None, str | None]:
    """Load ``last.pt``; ``(None, reason)`` when it cannot be read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign or damaged file is set aside, never trusted
        return None, f"{path.name} cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(ckpt, dict):
        return None, f"{path.name} is not a checkpoint dict"
    return ckpt, None


def resume_or_start(
    run: TrainingRun, paths: StatePaths, train_pairs: list[VolumePair], device: torch.device
) -> bool:
    """Resume from ``last.pt`` when it belongs to this run, else start fresh.

    A checkpoint of another run (its fingerprint differs, or it has none or cannot be
    read) is set aside with :func:`set_aside_state`. A fresh start calibrates the output
    scale (``cfg["calibrate_output"]``). Returns ``True`` when the run resumed.
    """
    if paths.last.exists():
        ckpt, reason = _read_checkpoint(paths.last)
        if ckpt is not None:
            reason = fingerprint_changes(ckpt, run)
        if reason is None:
            _resume(run, ckpt, paths)
            return True
        set_aside_state(paths.root, reason)
    if run.cfg["calibrate_output"]:
        gen0 = _seed_epoch(run.cfg["seed"], 0)
        m0, p0 = next(_batches(train_pairs, run.model, run.cfg, gen0))
        factor = calibrate_output_scale(run.model, m0.to(device), p0.to(device))
        log.info("initial output scale calibrated: head_out x %.4g", factor)
    return False


def _resume(run: TrainingRun, ckpt: dict, paths: StatePaths) -> None:
    """Load model, optimizer, scheduler, RNG states, epoch, best score and history."""
    run.model.load_state_dict(ckpt["model_state"])
    run.optimizer.load_state_dict(ckpt["optimizer_state"])
    run.scheduler.load_state_dict(ckpt["scheduler_state"])
    _set_rng_state(ckpt["rng"])
    run.start_epoch, run.best_score = int(ckpt["epoch"]) + 1, float(ckpt["best_score"])
    if paths.history.exists():
        run.history = [
            r for r in pd.read_csv(paths.history).to_dict("records") if r["epoch"] <= ckpt["epoch"]
        ]
    log.info("resuming from %s after epoch %d", paths.last, ckpt["epoch"])


# ---------------------------------------------------------------------------------------------
# 5. The epoch loop
# ---------------------------------------------------------------------------------------------


def train_epoch(
    run: TrainingRun, pairs: list[VolumePair], epoch: int, device: torch.device
) -> dict:
    """Train one epoch (reseeded from ``(seed, epoch)``), step the schedule.

    Returns
    -------
    dict
        ``epoch``, ``lr`` (of this epoch), ``loss`` and every loss term, averaged over steps.

    Raises
    ------
    ValueError
        On a non-finite loss (naming the epoch and the terms).
    """
    cfg = run.cfg
    gen = _seed_epoch(cfg["seed"], epoch)
    run.model.train()
    lr = run.optimizer.param_groups[0]["lr"]
    sums: dict[str, float] = {}
    n = 0
    for mri, pet in epoch_batches(pairs, run.model, cfg, gen):
        mri, pet = mri.to(device), pet.to(device)
        with autocast_context(device, cfg["amp"]):
            fused = run.model(mri, pet)
        loss, parts = run.loss_fn(fused.float(), mri, pet)
        if not torch.isfinite(loss):
            raise ValueError(f"epoch {epoch}: non-finite loss {float(loss)} ({parts})")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
    run.scheduler.step()
    return {"epoch": epoch, "lr": lr, **{k: v / n for k, v in sums.items()}}


# ---------------------------------------------------------------------------------------------
# 6. Validate and select
# ---------------------------------------------------------------------------------------------


def validation_scores(
    model: DC2Fusion, pairs: Sequence[VolumePair], device: torch.device, amp: str | bool = "auto"
) -> dict[str, float]:
    """Mean 3D PSNR and SSIM of the clipped fused volume vs MRI and PET over ``pairs``.

    ``score = 0.1 * PSNR + SSIM`` with each metric averaged over (F, MRI) and (F, PET).
    A 2D model is applied slice-wise, so 2D and 3D models are scored the same way.
    """
    was_training = model.training
    model.eval()
    ps, ss = [], []
    with torch.no_grad():
        for pair in pairs:
            fused = fuse_volume(model, pair.mri, pair.pet, device, amp=amp)
            f = torch.from_numpy(fused)[None, None]
            for src in (pair.mri, pair.pet):
                s = torch.from_numpy(src)[None, None]
                ps.append(float(psnr(f, s).clamp(max=100.0)))
                ss.append(float(ssim(f, s)))
    model.train(was_training)
    vpsnr, vssim = float(np.mean(ps)), float(np.mean(ss))
    return {"val_psnr": vpsnr, "val_ssim": vssim, "val_score": 0.1 * vpsnr + vssim}


def validate_and_select(
    run: TrainingRun, row: dict, val_pairs: Sequence[VolumePair], device: torch.device
) -> tuple[float, bool]:
    """Add the validation scores to ``row``; return ``(score, is_best)``.

    The score is ``val_score`` (:func:`validation_scores`), or minus the training loss
    without validation pairs. ``run.best_score`` is updated when the score improves.
    """
    if val_pairs:
        row.update(validation_scores(run.model, val_pairs, device, run.cfg["amp"]))
        score = row["val_score"]
    else:
        score = -row["loss"]
    is_best = score > run.best_score
    if is_best:
        run.best_score = score
    return score, is_best


# ---------------------------------------------------------------------------------------------
# 7. Checkpoint
# ---------------------------------------------------------------------------------------------


def _save(obj: dict, path: Path) -> None:
    """``torch.save`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_history(rows: list[dict], path: Path) -> None:
    """Write the history rows as CSV, atomically."""
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def save_checkpoints(
    run: TrainingRun, epoch: int, score: float, is_best: bool, paths: StatePaths
) -> None:
    """Write ``model.pt`` (when ``is_best``), then ``last.pt`` and ``history.csv``.

    Both checkpoints describe themselves (:meth:`TrainingRun.record`); ``last.pt`` also
    holds the optimizer, the schedule, the best score, every RNG state and the split rows.
    """
    state = run.model.state_dict()
    if is_best:
        _save({**run.record(), "model_state": state, "epoch": epoch, "score": score}, paths.model)
    _save(
        {
            **run.record(),
            "split": run.split,
            "model_state": state,
            "optimizer_state": run.optimizer.state_dict(),
            "scheduler_state": run.scheduler.state_dict(),
            "epoch": epoch,
            "best_score": run.best_score,
            "rng": _rng_state(),
        },
        paths.last,
    )
    _write_history(run.history, paths.history)


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def train_model(
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    out_dir: str | os.PathLike,
    *,
    model_config: dict,
    train_config: dict,
    device: str | None = None,
    threads: int | None = None,
    time_budget_s: float | None = None,
) -> Path:
    """Train (or resume) a DC2Fusion model and return the path of ``model.pt``.

    Parameters
    ----------
    train_items, val_items : sequence
        ``(subject_id, mri_path, pet_path)`` on the model grid (cubes in [0, 1]).
        Validation selects ``model.pt``; test data must never be passed here.
    out_dir : path
        The state folder: receives ``checkpoints/last.pt``, ``model.pt``, ``history.csv``
        (and ``stale-*/``, the state of another run set aside).
    model_config : dict
        :class:`~fusion3d.models.DC2Fusion` init kwargs.
    train_config : dict
        Keys of :data:`DEFAULT_TRAIN_CONFIG` (all optional): ``epochs``, ``lr``,
        ``poly_power`` (0: constant lr), ``seed``, ``batch_size``, ``loss_weights``,
        ``loss_terms``, ``augment``, ``rotation_interval`` (None: follow the model's
        ``variant``), ``amp`` ("auto": bf16 on CUDA, off on CPU), ``slices_per_volume``
        (2D), ``calibrate_output``, ``stop_after_epoch`` (stop early, e.g. to test resuming).
    device : str, optional
        ``None``: CUDA if available, else CPU (with a warning).
    threads : int, optional
        ``torch.set_num_threads``.
    time_budget_s : float, optional
        Stop after the first epoch that ends this many seconds after the epoch loop
        started (training and validation time; for benchmarks). Not part of the fingerprint.

    Returns
    -------
    pathlib.Path
        ``out_dir / "model.pt"``.
    """
    cfg = resolve_train_config(train_config, model_config)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    paths = StatePaths(Path(out_dir))
    train_pairs, val_pairs = prepare_data(train_items, val_items)
    run = build_training(
        model_config,
        cfg,
        dev,
        _split_rows(train_items, val_items),
        train_pairs[0].mri.shape,
        train_items[0][1],
    )
    if not resume_or_start(run, paths, train_pairs, dev) and val_pairs:
        _score_initialisation(run, val_pairs, dev, paths)
    last_epoch = _run_epochs(run, train_pairs, val_pairs, dev, paths, time_budget_s)
    if not paths.model.exists():
        raise ValueError(
            f"{paths.root}: training ran no epoch (start {run.start_epoch}, last {last_epoch})"
        )
    return paths.model


def _score_initialisation(
    run: TrainingRun, val_pairs: Sequence[VolumePair], device: torch.device, paths: StatePaths
) -> None:
    """History row 0: the validation scores of the initial (calibrated) network."""
    init = validation_scores(run.model, val_pairs, device, run.cfg["amp"])
    run.history.append(
        {"epoch": 0, "lr": float("nan"), "loss": float("nan"), **init, "seconds": 0.0}
    )
    log.info("epoch 0 (initialisation): %s", _fmt(init))
    _write_history(run.history, paths.history)


def _run_epochs(
    run: TrainingRun,
    train_pairs: list[VolumePair],
    val_pairs: list[VolumePair],
    device: torch.device,
    paths: StatePaths,
    time_budget_s: float | None,
) -> int:
    """Epochs ``start_epoch .. last``: train, validate and select, checkpoint. Returns last."""
    cfg = run.cfg
    epochs, stop = cfg["epochs"], cfg["stop_after_epoch"]
    last_epoch = epochs if stop is None else min(epochs, stop)
    loop_start = time.perf_counter()
    for epoch in range(run.start_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        row = train_epoch(run, train_pairs, epoch, device)
        score, is_best = validate_and_select(run, row, val_pairs, device)
        row["seconds"] = time.perf_counter() - t0
        run.history.append(row)
        save_checkpoints(run, epoch, score, is_best, paths)
        log.info("epoch %d/%d %s", epoch, epochs, _fmt(row))
        if time_budget_s is not None and time.perf_counter() - loop_start >= time_budget_s:
            log.info("time budget of %.0f s spent after epoch %d", time_budget_s, epoch)
            return epoch
    return last_epoch


def _fmt(row: dict) -> str:
    """``key=value`` pairs of a history row for the log."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
