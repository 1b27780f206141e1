"""The training stage: :func:`train_model` runs steps 1-7 of :mod:`fusion3d.learned.training`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fusion3d.learned import distributed
from fusion3d.learned.devices import (
    resolve_device,
)
from fusion3d.learned.distributed import DistContext
from fusion3d.learned.loader import (
    PairSource,
)
from fusion3d.learned.recipes import Recipe, recipe_for
from fusion3d.learned.training.build import build_training, wrap_for_training
from fusion3d.learned.training.checkpoints import save_checkpoints, write_history
from fusion3d.learned.training.config import Item, resolve_train_config
from fusion3d.learned.training.data import TrainData, build_loader, prepare_data
from fusion3d.learned.training.epoch import train_epoch
from fusion3d.learned.training.fingerprint import split_rows
from fusion3d.learned.training.resume import resume_or_start
from fusion3d.learned.training.run import StatePaths, TrainingRun
from fusion3d.learned.training.validation import (
    patience_spent,
    validate_and_select,
    validation_scores,
)

log = logging.getLogger(__name__)


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
        split_rows(train_items, val_items),
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
    distributed.on_rank0(run.ctx, write_history, run.history, paths.history)


def _run_epochs(
    run: TrainingRun,
    data: TrainData,
    val_sources: Sequence[PairSource],
    device: torch.device,
    paths: StatePaths,
    time_budget_s: float | None,
) -> int:
    """Epochs ``start_epoch .. last``: train, validate and select, checkpoint. Returns last.

    A run stops at ``epochs`` (the cap), or earlier when its patience is spent
    (:func:`~fusion3d.learned.training.validation.patience_spent`) or its time budget; the
    history row of that epoch names why in its ``stop`` column (``cap``, ``patience``,
    ``time budget``). ``stop_after_epoch`` interrupts a run (to be resumed): no mark.
    """
    cfg = run.cfg
    epochs, stop = cfg["epochs"], cfg["stop_after_epoch"]
    last_epoch = epochs if stop is None else min(epochs, stop)
    if run.start_epoch > 1 and (patience_spent(run) or run.start_epoch > epochs):
        return _already_stopped(run, paths)
    loop_start = time.perf_counter()
    for epoch in range(run.start_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        row = train_epoch(run, data, epoch, device)
        score, is_best = validate_and_select(run, row, val_sources, device)
        row["seconds"] = time.perf_counter() - t0
        reason = _stop_reason(run, epoch, loop_start, time_budget_s)
        if reason:
            row["stop"] = reason
        run.history.append(row)
        save_checkpoints(run, epoch, score, is_best, paths)
        log.info("epoch %d/%d %s", epoch, epochs, _fmt(row))
        if reason:
            _log_stop(run, epoch, reason)
            return epoch
    return last_epoch


def _stop_reason(
    run: TrainingRun, epoch: int, loop_start: float, time_budget_s: float | None
) -> str | None:
    """Why the run stops after ``epoch`` (``patience``, ``cap``, ``time budget``), or None."""
    if patience_spent(run):
        return "patience"
    if epoch == run.cfg["epochs"]:
        return "cap"
    if time_budget_s is not None and _budget_spent(run.ctx, loop_start, time_budget_s):
        return "time budget"
    return None


def _log_stop(run: TrainingRun, epoch: int, reason: str) -> None:
    """One log line: where and why the run stopped, and its best score."""
    detail = {
        "patience": f"{run.checks_since_best} validation checks without improvement, "
        f"patience {run.cfg['patience']}",
        "cap": f"train.epochs {run.cfg['epochs']} reached",
        "time budget": "time budget spent",
    }[reason]
    log.info(
        "stopped after epoch %d: %s (%s); best score %.4g", epoch, reason, detail, run.best_score
    )


def _already_stopped(run: TrainingRun, paths: StatePaths) -> int:
    """A resumed run that had stopped (patience spent or cap reached): trains nothing, marks
    the last history row again and returns its epoch."""
    epoch = run.start_epoch - 1
    reason = "patience" if patience_spent(run) else "cap"
    if run.history:
        run.history[-1]["stop"] = reason
        distributed.on_rank0(run.ctx, write_history, run.history, paths.history)
    _log_stop(run, epoch, reason)
    return epoch


def _fmt(row: dict) -> str:
    """``key=value`` pairs of a history row for the log."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def _budget_spent(ctx: DistContext, start: float, budget_s: float) -> bool:
    """True when the time budget is spent on any rank (every rank stops at the same epoch)."""
    spent = float(time.perf_counter() - start >= budget_s)
    return distributed.all_reduce_sums(ctx, {"spent": spent})["spent"] > 0
