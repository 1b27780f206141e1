"""Train a fusion network with checkpointing, exact resume and validation-based selection.

One loop for every network of the study: DC2Fusion (2D or 3D) and the published 2D
networks. What differs between them (model, loss, optimiser, schedule, published training
settings) is the network's :class:`~fusion3d.learned.recipes.Recipe`, chosen by ``method``.

The stage, step by step (:func:`train_model`):

1. resolve the configs (:func:`resolve_train_config`: the recipe's published defaults, then
   the config's keys; for DC2Fusion the rotation interval follows the model's ``variant``
   unless set);
2. prepare the data (:func:`prepare_data`: every pair checked once and written to the
   memory-mapped cache ``cache/`` of the state folder; nothing is held in RAM);
3. build the model, loss, optimizer and schedule (:func:`build_training`) and the
   streaming loader (:func:`build_loader`, :mod:`fusion3d.learned.loader`);
4. resume or start (:func:`resume_or_start`): ``checkpoints/last.pt`` is resumed only when
   its fingerprint (:func:`training_fingerprint`: the split rows, the resolved model
   config and the resolved training config) equals this run's; otherwise the old state
   is set aside in ``stale-<UTC time>/`` (never deleted) with a log line naming what
   changed, and training starts fresh;
5. the epoch loop (:func:`train_epoch` over the loader's batches, copied to the device
   without blocking; data-parallel over ranks under torchrun, :func:`wrap_for_training`);
6. validate and select every ``val_every`` epochs and at the last (:func:`validation_scores`
   on the device, :func:`validate_and_select`);
7. checkpoint (:func:`save_checkpoints`, rank 0 only).

Writes under ``out_dir``: ``checkpoints/last.pt`` (every epoch), ``model.pt`` (best
validation score), ``history.csv`` (one row per epoch; row 0 scores the
initialisation). Every file is written atomically; every checkpoint loads with
``torch.load(..., weights_only=True)`` and is self-describing: ``architecture`` (the key
of the recipe; files before it have ``method``), ``init_args`` (the fully resolved
constructor arguments of the network), ``variant`` and ``fingerprint``, so :func:`fusion3d.learned.inference.load_model` rebuilds the
network from the file alone.

Reproducibility: the model is initialised from ``seed``; every epoch reseeds torch,
numpy and ``random`` from ``(seed, epoch, rank)``, and every sample (its 2D slice, its
augmentation) is drawn from its own generator seeded by ``(seed, epoch, sample index)``
(:mod:`fusion3d.learned.loader`), so a run stopped after epoch k and resumed from
``last.pt`` ends with exactly the weights of an uninterrupted run (CPU), whatever the
number of loader workers.

Several GPUs: ``python -m torch.distributed.run --standalone --nproc_per_node N -m
fusion3d.learned.training <spec.json>`` (:func:`train_with_torchrun` writes the spec and runs it)
trains with ``DistributedDataParallel``: every rank takes every N-th sample of the epoch's
shuffled order (an effective batch of ``N * batch_size``), gradients are averaged, only
rank 0 writes. A checkpoint holds no per-rank state (the global RNGs of the other ranks
are re-derived from the seed), so a run resumes with any N.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import inspect
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from fusion3d.io import atomic_path
from fusion3d.learned import distributed
from fusion3d.learned.data import AugmentConfig, augment_pair
from fusion3d.learned.devices import (
    apply_channels_last,
    autocast_context,
    maybe_compile,
    memory_format,
    require_gpu,
    resolve_device,
    to_device,
)
from fusion3d.learned.distributed import DistContext
from fusion3d.learned.inference import checkpoint_architecture, fuse_tensor
from fusion3d.learned.loader import (
    EpochSampler,
    PairDataset,
    PairSource,
    epoch_seed,
    make_loader,
    prepare_sources,
    sample_seed,
)
from fusion3d.learned.losses import psnr, ssim
from fusion3d.learned.recipes import RUN_CONTROL_KEYS, Recipe, recipe_for
from fusion3d.learned.recipes.dcfb import DCFB_RECIPE, calibrate_output_scale

__all__ = [
    "DEFAULT_TRAIN_CONFIG",
    "StatePaths",
    "TrainData",
    "TrainingRun",
    "build_loader",
    "build_training",
    "calibrate_output_scale",
    "fingerprint_changes",
    "model_init_args",
    "prepare_data",
    "resolve_train_config",
    "resume_or_start",
    "save_checkpoints",
    "set_aside_state",
    "train_epoch",
    "train_model",
    "train_with_torchrun",
    "training_fingerprint",
    "validate_and_select",
    "validation_scores",
    "wrap_for_training",
]

log = logging.getLogger(__name__)

#: DC2Fusion's resolved defaults (every recipe has its own: ``recipe.all_defaults()``).
DEFAULT_TRAIN_CONFIG: dict = DCFB_RECIPE.all_defaults()

#: Common train-config switches that must be true or false.
BOOL_KEYS = ("augment", "cache", "compile", "channels_last", "fused_adam")

Item = tuple[str, str | os.PathLike, str | os.PathLike]


# ---------------------------------------------------------------------------------------------
# 1. Resolve the configs
# ---------------------------------------------------------------------------------------------


def resolve_train_config(
    train_config: dict | None, model_config: dict | None = None, recipe: Recipe | None = None
) -> dict:
    """The recipe's defaults (``recipe.all_defaults()``: the published settings) updated with
    ``train_config``, every key checked (ValueError names it). ``recipe``: DC2Fusion's by default.

    For DC2Fusion, ``rotation_interval`` ``None`` (default) follows the model config's
    ``variant``: ``"published"`` for ``variant: published``, else ``"symmetric"``.
    """
    recipe = recipe or DCFB_RECIPE
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
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"train_config[{key!r}] must be a positive integer, got {v!r}")
    for key in BOOL_KEYS:
        if not isinstance(cfg[key], bool):
            raise ValueError(f"train_config[{key!r}] must be true or false, got {cfg[key]!r}")
    workers = cfg["num_workers"]
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"train_config['num_workers'] must be an integer >= 0, got {workers!r}")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise ValueError(f"train_config['seed'] must be an integer, got {cfg['seed']!r}")
    if not (isinstance(cfg["lr"], int | float) and math.isfinite(cfg["lr"]) and cfg["lr"] > 0):
        raise ValueError(f"train_config['lr'] must be a positive number, got {cfg['lr']!r}")
    if cfg["amp"] not in ("auto", "bf16", "off", True, False):
        raise ValueError(f"train_config['amp'] must be 'auto', 'bf16' or 'off', got {cfg['amp']!r}")
    if cfg["stop_after_epoch"] is not None and (
        not isinstance(cfg["stop_after_epoch"], int) or cfg["stop_after_epoch"] < 1
    ):
        raise ValueError(
            f"train_config['stop_after_epoch'] must be None or a positive integer, "
            f"got {cfg['stop_after_epoch']!r}"
        )
    cfg["lr"] = float(cfg["lr"])  # 1 and 1.0: one fingerprint


def _plain(value):
    """Tuples and lists as lists, recursively (primitive, comparable, weights_only-safe)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def model_init_args(model: nn.Module, model_config: dict) -> dict:
    """The fully resolved constructor arguments of ``model`` (plain values).

    The model's own ``init_args`` when it records them; else ``model_config`` completed
    with the defaults of the model class's signature, so a later change of a default
    cannot change what a checkpoint rebuilds.
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
    if checkpoint_architecture(ckpt) != run.recipe.architecture:
        return f"architecture {checkpoint_architecture(ckpt)!r} -> {run.recipe.architecture!r}"
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

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: dict
    init_args: dict
    split: dict
    fingerprint: dict
    start_epoch: int = 1
    best_score: float = -math.inf
    history: list[dict] = field(default_factory=list)
    ctx: DistContext = field(default_factory=DistContext)
    forward: nn.Module | None = None  # what the loop calls: the model, DDP- or compile-wrapped
    recipe: Recipe = DCFB_RECIPE

    @property
    def variant(self) -> str:
        """The model's variant (``fixed`` unless the config says otherwise)."""
        return str(self.init_args.get("variant", "fixed"))

    def record(self) -> dict:
        """What every checkpoint of this run carries to describe itself."""
        return {
            "architecture": self.recipe.architecture,
            "init_args": self.init_args,
            "variant": self.variant,
            "fingerprint": self.fingerprint,
            "train_config": self.cfg,
        }


# ---------------------------------------------------------------------------------------------
# 2. Prepare the data (the data pipeline: pairs streamed from a memory-mapped cache)
# ---------------------------------------------------------------------------------------------


def prepare_data(
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    cache_dir: Path | None,
    ctx: DistContext | None = None,
) -> tuple[list[PairSource], list[PairSource]]:
    """Check the training and validation pairs (same grid for both) and cache them once.

    Each pair is read once and, with ``cache_dir``, written there as a memory-mapped
    ``.npy`` (:func:`~fusion3d.learned.loader.prepare_sources`); only one pair is in RAM at
    a time. Under torchrun rank 0 writes the cache while the other ranks wait, then they
    find it written.
    """
    ctx = ctx or DistContext()
    if not ctx.is_rank0:
        distributed.barrier(ctx)
    train = prepare_sources(train_items, cache_dir, what="train_items")
    val = prepare_sources(val_items, cache_dir, what="val_items") if len(val_items) else []
    if ctx.is_rank0:
        distributed.barrier(ctx)
    if not val:
        log.warning("no validation items: model.pt is selected on the training loss")
    if val and val[0].shape != train[0].shape:
        raise ValueError(
            f"{val_items[0][1]}: validation grid {val[0].shape} differs from training "
            f"{train[0].shape}"
        )
    return train, val


@dataclass
class TrainData:
    """The training samples of this rank: dataset, epoch sampler and loader."""

    dataset: PairDataset
    sampler: EpochSampler
    loader: DataLoader


def _dataset(
    sources: Sequence[PairSource], spatial_dims: int, cfg: dict, augment: bool
) -> PairDataset:
    """The epoch's samples: whole volumes (3D) or ``slices_per_volume`` slices (2D)."""
    aug = None
    if augment:
        aug = partial(augment_pair, cfg=AugmentConfig(rot_interval=cfg["rotation_interval"]))
    return PairDataset(
        sources,
        spatial_dims=spatial_dims,
        picks_per_subject=1 if spatial_dims == 3 else cfg["slices_per_volume"],
        seed=cfg["seed"],
        augment=aug,
    )


def build_loader(
    run: TrainingRun, sources: Sequence[PairSource], device: torch.device
) -> TrainData:
    """The streaming loader of this rank (``num_workers`` workers, pinned memory on CUDA).

    The augmentation is the published one (:func:`~fusion3d.learned.data.augment_pair`,
    rotation interval ``cfg["rotation_interval"]``), applied in the workers with each
    sample's own generator.
    """
    cfg = run.cfg
    dataset = _dataset(sources, run.model.spatial_dims, cfg, cfg["augment"])
    sampler = EpochSampler(
        len(dataset), seed=cfg["seed"], rank=run.ctx.rank, world_size=run.ctx.world_size
    )
    loader = make_loader(
        dataset,
        sampler,
        batch_size=cfg["batch_size"],
        num_workers=cfg["num_workers"],
        device=device,
        seed=cfg["seed"],
    )
    return TrainData(dataset, sampler, loader)


def first_batch(run: TrainingRun, sources: Sequence[PairSource]) -> tuple[torch.Tensor, ...]:
    """The first ``batch_size`` samples of epoch 0's order, not augmented: ``(mri, pet)``.

    The same on every rank (the order is not sharded), for :func:`calibrate_output_scale`.
    """
    dataset = _dataset(sources, run.model.spatial_dims, run.cfg, augment=False)
    keys = list(EpochSampler(len(dataset), seed=run.cfg["seed"]))[: run.cfg["batch_size"]]
    samples = [dataset[k] for k in keys]
    return torch.stack([m for m, _ in samples]), torch.stack([p for _, p in samples])


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
    ctx: DistContext | None = None,
    recipe: Recipe | None = None,
) -> TrainingRun:
    """Build the recipe's model (seeded with ``cfg["seed"]``), loss, optimiser and schedule.

    ``grid_shape`` (a training volume's shape) is checked against the model's size divisor;
    a ValueError names ``grid_source``. The throughput switches ``channels_last`` and
    ``fused_adam`` apply here (:mod:`fusion3d.learned.devices`).
    """
    recipe = recipe or DCFB_RECIPE
    torch.manual_seed(cfg["seed"])
    model = recipe.build_model(dict(model_config)).to(device)
    apply_channels_last(model, model.spatial_dims, cfg["channels_last"])
    grid = grid_shape[:2] if model.spatial_dims == 2 else grid_shape
    divisor = int(getattr(model, "size_divisor", 1))
    if any(s % divisor for s in grid):
        raise ValueError(
            f"{grid_source}: grid {grid_shape} not divisible by the {recipe.architecture} model's "
            f"size divisor {divisor}"
        )
    loss_fn = recipe.build_loss(cfg, model).to(device)
    optimizer = recipe.build_optimizer(model.parameters(), cfg, device)
    scheduler = recipe.build_scheduler(optimizer, cfg)
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
        ctx=ctx or DistContext(),
        recipe=recipe,
    )


def wrap_for_training(run: TrainingRun) -> None:
    """Set ``run.forward``: the model in ``DistributedDataParallel`` under torchrun, compiled
    with ``torch.compile`` when ``cfg["compile"]``.

    Called after :func:`resume_or_start`, so DDP starts from the resumed (or calibrated)
    weights, which it broadcasts from rank 0. ``run.model`` stays the plain network: its
    state is what checkpoints hold.
    """
    module: nn.Module = run.model
    if run.ctx.distributed:
        dev = run.ctx.device
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    run.forward = maybe_compile(module, run.cfg["compile"])


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


def _seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Reseed every global RNG (the model's own randomness: drop path) from ``(seed, epoch)``.

    Rank 0 uses :func:`~fusion3d.learned.loader.epoch_seed` ``(seed, epoch)``; rank
    ``r > 0`` of a data-parallel run uses ``sample_seed(seed, epoch, 2**40 + r)`` (an index no
    sample has), so ranks drop different paths.
    """
    s = epoch_seed(seed, epoch)
    if rank:
        s = sample_seed(seed, epoch, 2**40 + rank)
    torch.manual_seed(s)
    np.random.seed(s % (2**32))
    random.seed(s)


def set_aside_state(root: Path, reason: str) -> Path:
    """Move everything in the state folder ``root`` (but earlier ``stale-*`` folders) aside.

    The data cache ``cache/`` stays (its files are named by their sources' identity and
    belong to no run). The old state goes to ``root/stale-<UTC time>/``; nothing is deleted. Returns that folder.
    """
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = root / f"stale-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = root / f"stale-{stamp}-{n}"
    target.mkdir(parents=True)
    for entry in sorted(root.iterdir()):
        if entry != target and not entry.name.startswith("stale-") and entry.name != "cache":
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
    run: TrainingRun, paths: StatePaths, train_sources: Sequence[PairSource], device: torch.device
) -> bool:
    """Resume from ``last.pt`` when it belongs to this run, else start fresh.

    A checkpoint of another run (its fingerprint differs, or it has none or cannot be
    read) is set aside with :func:`set_aside_state`. A fresh start runs the recipe's
    data-dependent initialisation (:meth:`~fusion3d.learned.recipes.Recipe.on_fresh_start`;
    DC2Fusion calibrates its output scale) on :func:`first_batch`. Returns ``True`` when the
    run resumed. Under torchrun rank 0 decides first (and sets aside); then every other
    rank reads the same state.
    """
    ctx = run.ctx
    if not ctx.is_rank0:
        distributed.barrier(ctx)
    resumed = _resume_or_start(run, paths, train_sources, device)
    if ctx.is_rank0:
        distributed.barrier(ctx)
    return resumed


def _resume_or_start(
    run: TrainingRun, paths: StatePaths, train_sources: Sequence[PairSource], device: torch.device
) -> bool:
    """:func:`resume_or_start` on one rank."""
    if paths.last.exists():
        ckpt, reason = _read_checkpoint(paths.last)
        if ckpt is not None:
            reason = fingerprint_changes(ckpt, run)
        if reason is None:
            _resume(run, ckpt, paths)
            return True
        set_aside_state(paths.root, reason)
    _seed_epoch(run.cfg["seed"], 0)
    m0, p0 = first_batch(run, train_sources)
    line = run.recipe.on_fresh_start(run.model, m0.to(device), p0.to(device), run.cfg)
    if line:
        log.info("%s", line)
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


def train_epoch(run: TrainingRun, data: TrainData, epoch: int, device: torch.device) -> dict:
    """Train one epoch (reseeded from ``(seed, epoch, rank)``), step the schedule.

    Batches come from the loader (built ahead by its workers, pinned on CUDA) and are copied
    to the device without blocking; under torchrun the loss terms are averaged over every
    rank's steps, and rank 0's BatchNorm statistics are copied to all ranks at the end.

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
    _seed_epoch(cfg["seed"], epoch, run.ctx.rank)
    data.sampler.set_epoch(epoch)
    run.model.train()
    forward = run.forward or run.model
    fmt = memory_format(run.model.spatial_dims, cfg["channels_last"])
    lr = run.optimizer.param_groups[0]["lr"]
    sums: dict[str, float] = {}
    n = 0
    for mri, pet in data.loader:
        mri = to_device(mri, device).contiguous(memory_format=fmt)
        pet = to_device(pet, device).contiguous(memory_format=fmt)
        loss, parts = run.loss_fn(partial(_amp_forward, forward, device, cfg["amp"]), mri, pet)
        if not torch.isfinite(loss):
            raise ValueError(f"epoch {epoch}: non-finite loss {float(loss)} ({parts})")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
    run.scheduler.step()
    totals = distributed.all_reduce_sums(run.ctx, {**sums, "steps": n})
    steps = totals.pop("steps")
    distributed.broadcast_buffers(run.ctx, run.model)
    return {"epoch": epoch, "lr": lr, **{k: totals[k] / steps for k in sums}}


def _amp_forward(forward, device: torch.device, amp, *inputs: torch.Tensor) -> torch.Tensor:
    """``forward(*inputs)`` under the run's autocast, as float32 (what a recipe's loss calls)."""
    with autocast_context(device, amp):
        out = forward(*inputs)
    return out.float()


# ---------------------------------------------------------------------------------------------
# 6. Validate and select
# ---------------------------------------------------------------------------------------------


def validation_scores(
    model: nn.Module,
    sources: Sequence[PairSource],
    device: torch.device,
    amp: str | bool = "auto",
    ctx: DistContext | None = None,
) -> dict[str, float]:
    """Mean 3D PSNR and SSIM of the clipped fused volume vs MRI and PET over ``sources``.

    ``score = 0.1 * PSNR + SSIM`` with each metric averaged over (F, MRI) and (F, PET).
    A 2D model is applied slice-wise, so 2D and 3D models are scored the same way.
    Everything is computed on ``device`` (fusion, PSNR, SSIM; one transfer of three
    numbers at the end); under torchrun each rank scores every N-th subject and the sums
    are added over ranks.
    """
    ctx = ctx or DistContext()
    dataset = PairDataset(sources)  # whole volumes, not augmented
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # PSNR, SSIM, count
    with torch.no_grad():
        for index in range(ctx.rank, len(dataset), ctx.world_size):
            mri, pet = (to_device(x, device)[None] for x in dataset[index])  # (1, 1, D, H, W)
            fused = fuse_tensor(model, mri[0, 0], pet[0, 0], amp=amp)[None, None]
            for src in (mri, pet):
                sums[0] += psnr(fused, src).clamp(max=100.0)[0].double()
                sums[1] += ssim(fused, src)[0].double()
                sums[2] += 1
    model.train(was_training)
    total = distributed.all_reduce_sums(
        ctx, dict(zip(("psnr", "ssim", "n"), sums.tolist(), strict=True))
    )
    vpsnr, vssim = total["psnr"] / total["n"], total["ssim"] / total["n"]
    return {"val_psnr": vpsnr, "val_ssim": vssim, "val_score": 0.1 * vpsnr + vssim}


def is_validation_epoch(epoch: int, cfg: dict) -> bool:
    """Validate every ``val_every`` epochs and at the last epoch."""
    return epoch % cfg["val_every"] == 0 or epoch == cfg["epochs"]


def validate_and_select(
    run: TrainingRun,
    row: dict,
    val_sources: Sequence[PairSource],
    device: torch.device,
) -> tuple[float | None, bool]:
    """Add the validation scores to ``row``; return ``(score, is_best)``.

    The score is ``val_score`` (:func:`validation_scores`) at validation epochs
    (:func:`is_validation_epoch`; ``None`` and not best at the others), or minus the
    training loss without validation pairs. ``run.best_score`` is updated when the score
    improves.
    """
    if val_sources:
        if not is_validation_epoch(row["epoch"], run.cfg):
            return None, False
        row.update(validation_scores(run.model, val_sources, device, run.cfg["amp"], run.ctx))
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
    run: TrainingRun, epoch: int, score: float | None, is_best: bool, paths: StatePaths
) -> None:
    """Write ``model.pt`` (when ``is_best``), then ``last.pt`` and ``history.csv`` (rank 0 only).

    Both checkpoints describe themselves (:meth:`TrainingRun.record`); ``last.pt`` also
    holds the optimizer, the schedule, the best score, rank 0's RNG states and the split
    rows (every rank's state is the same, or re-derived from the seed: see the module
    docstring).
    """
    if not run.ctx.is_rank0:
        return
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
    gpu: bool = False,
    threads: int | None = None,
    time_budget_s: float | None = None,
    method: str = "dcfb",
) -> Path:
    """Train (or resume) a fusion network and return the path of ``model.pt``.

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this; the ranks train the model
    data-parallel and rank 0 writes (see the module docstring).

    Parameters
    ----------
    train_items, val_items : sequence
        ``(subject_id, mri_path, pet_path)`` on the model grid (cubes in [0, 1]).
        Validation selects ``model.pt``; test data must never be passed here.
    out_dir : path
        The state folder: receives ``checkpoints/last.pt``, ``model.pt``, ``history.csv``
        (and ``stale-*/``, the state of another run set aside).
    model_config : dict
        The network's constructor arguments (:class:`~fusion3d.learned.models.DC2Fusion`'s
        for ``method="dcfb"``).
    train_config : dict
        Keys of the recipe's defaults (all optional; for DC2Fusion
        :data:`DEFAULT_TRAIN_CONFIG`): ``epochs``, ``lr``,
        ``poly_power`` (0: constant lr), ``seed``, ``batch_size``, ``loss_weights``,
        ``loss_terms``, ``augment``, ``rotation_interval`` (None: follow the model's
        ``variant``), ``amp`` ("auto": bf16 on CUDA, off on CPU), ``slices_per_volume``
        (2D), ``calibrate_output``, ``stop_after_epoch`` (stop early, e.g. to test resuming),
        ``val_every`` (validate every k epochs and at the last), ``num_workers`` (loader
        processes), ``cache`` (memory-mapped cache in ``out_dir/cache/``), and the
        throughput switches ``compile``, ``channels_last``, ``fused_adam``.
    device : str, optional
        ``None``: CUDA if available, else CPU (with a warning).
    gpu : bool
        The study asked for a GPU (``resources.gpu``): stop at once, with what was found,
        when no usable CUDA device is there (never a silent CPU run).
    threads : int, optional
        ``torch.set_num_threads``.
    time_budget_s : float, optional
        Stop after the first epoch that ends this many seconds after the epoch loop
        started (training and validation time; for benchmarks). Not part of the fingerprint.
    method : str
        The architecture (``"dcfb"``, ``"swinfuse"``, ``"matr"``, ``"dilran"``) or a network
        method key (``"dcfb3d"``, ...): its :class:`~fusion3d.learned.recipes.Recipe` trains it.

    Returns
    -------
    pathlib.Path
        ``out_dir / "model.pt"``.
    """
    recipe = recipe_for(method)
    cfg = resolve_train_config(train_config, model_config, recipe)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    dev = resolve_device(device, gpu=gpu)
    owns_group = not torch.distributed.is_initialized()
    ctx = distributed.init_distributed(dev)
    try:
        return _train(
            train_items, val_items, Path(out_dir), model_config, cfg, ctx, time_budget_s, recipe
        )
    finally:
        if owns_group:
            distributed.teardown()


def _train(
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    out_dir: Path,
    model_config: dict,
    cfg: dict,
    ctx: DistContext,
    time_budget_s: float | None,
    recipe: Recipe,
) -> Path:
    """The stage's steps, on one rank (:func:`train_model`)."""
    dev = ctx.device
    paths = StatePaths(out_dir)
    cache_dir = paths.root / "cache" if cfg["cache"] else None
    train_sources, val_sources = prepare_data(train_items, val_items, cache_dir, ctx)
    run = build_training(
        model_config,
        cfg,
        dev,
        _split_rows(train_items, val_items),
        train_sources[0].shape,
        train_items[0][1],
        ctx,
        recipe,
    )
    if not resume_or_start(run, paths, train_sources, dev) and val_sources:
        _score_initialisation(run, val_sources, dev, paths)
    wrap_for_training(run)
    data = build_loader(run, train_sources, dev)
    last_epoch = _run_epochs(run, data, val_sources, dev, paths, time_budget_s)
    if ctx.is_rank0 and not paths.model.exists():
        if last_epoch < run.start_epoch:
            raise ValueError(
                f"{paths.root}: training ran no epoch (start {run.start_epoch}, last {last_epoch})"
            )
        log.warning("stopped after epoch %d before the first validation: no model.pt", last_epoch)
    return paths.model


def _score_initialisation(
    run: TrainingRun, val_sources: Sequence[PairSource], device: torch.device, paths: StatePaths
) -> None:
    """History row 0: the validation scores of the initial (calibrated) network."""
    init = validation_scores(run.model, val_sources, device, run.cfg["amp"], run.ctx)
    run.history.append(
        {"epoch": 0, "lr": float("nan"), "loss": float("nan"), **init, "seconds": 0.0}
    )
    log.info("epoch 0 (initialisation): %s", _fmt(init))
    distributed.on_rank0(run.ctx, _write_history, run.history, paths.history)


def _run_epochs(
    run: TrainingRun,
    data: TrainData,
    val_sources: Sequence[PairSource],
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
        row = train_epoch(run, data, epoch, device)
        score, is_best = validate_and_select(run, row, val_sources, device)
        row["seconds"] = time.perf_counter() - t0
        run.history.append(row)
        save_checkpoints(run, epoch, score, is_best, paths)
        log.info("epoch %d/%d %s", epoch, epochs, _fmt(row))
        if time_budget_s is not None and _budget_spent(run.ctx, loop_start, time_budget_s):
            log.info("time budget of %.0f s spent after epoch %d", time_budget_s, epoch)
            return epoch
    return last_epoch


def _budget_spent(ctx: DistContext, start: float, budget_s: float) -> bool:
    """True when the time budget is spent on any rank (every rank stops at the same epoch)."""
    spent = float(time.perf_counter() - start >= budget_s)
    return distributed.all_reduce_sums(ctx, {"spent": spent})["spent"] > 0


# ---------------------------------------------------------------------------------------------
# Several GPUs: torchrun
# ---------------------------------------------------------------------------------------------


def train_with_torchrun(
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    out_dir: str | os.PathLike,
    *,
    model_config: dict,
    train_config: dict,
    nproc: int,
    gpu: bool,
    threads: int | None = None,
    method: str = "dcfb",
) -> Path:
    """Run :func:`train_model` in ``nproc`` processes under torchrun on this node.

    The arguments go to ``out_dir/launch.json`` (written atomically); the command is
    :func:`fusion3d.learned.distributed.torchrun_command` ``(nproc, "fusion3d.learned.training",
    [launch.json])``, its output goes to this process's stderr (the rule's log). With
    ``gpu`` the job first checks that ``nproc`` CUDA devices are usable and stops at once
    otherwise. ``threads`` are shared out between the processes.

    Raises
    ------
    GPUUnavailableError
        ``gpu`` and fewer than ``nproc`` usable CUDA devices.
    RuntimeError
        When torchrun fails (its exit status; the ranks' errors are in the log above).
    """
    if gpu:
        require_gpu(nproc, what=f"resources.gpus: {nproc}")
    out = Path(out_dir)
    spec = {
        "train_items": [[str(x) for x in item] for item in train_items],
        "val_items": [[str(x) for x in item] for item in val_items],
        "out_dir": str(out),
        "model_config": _plain(dict(model_config)),
        "train_config": _plain(dict(train_config)),
        "gpu": bool(gpu),
        "threads": max(1, (threads or nproc) // nproc),
        "method": method,
    }
    launch = out / "launch.json"
    with atomic_path(launch) as tmp:
        tmp.write_text(json.dumps(spec, indent=1))
    cmd = distributed.torchrun_command(nproc, "fusion3d.learned.training", [launch])
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    src = str(Path(__file__).resolve().parents[1])  # this fusion3d, also in a checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    log.info("launching %d training processes: %s", nproc, " ".join(map(str, cmd)))
    sys.stderr.flush()
    result = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {result.returncode}: {' '.join(cmd)}")
    return StatePaths(out).model


def main(argv: Sequence[str] | None = None) -> int:
    """One torchrun rank: ``python -m fusion3d.learned.training <launch.json>`` (see
    :func:`train_with_torchrun`)."""
    ap = argparse.ArgumentParser(
        prog="python -m fusion3d.learned.training", description=main.__doc__
    )
    ap.add_argument("spec", type=Path, help="launch.json written by train_with_torchrun")
    spec_path = ap.parse_args(argv).spec
    try:
        spec = json.loads(spec_path.read_text())
        items = {k: [tuple(i) for i in spec[k]] for k in ("train_items", "val_items")}
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"{spec_path}: not a training launch spec ({exc!r})") from exc
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s"
    )
    train_model(
        items["train_items"],
        items["val_items"],
        spec["out_dir"],
        model_config=spec["model_config"],
        train_config=spec["train_config"],
        gpu=spec["gpu"],
        threads=spec["threads"],
        method=spec.get("method", "dcfb"),
    )
    return 0


def _fmt(row: dict) -> str:
    """``key=value`` pairs of a history row for the log."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


if __name__ == "__main__":
    sys.exit(main())
