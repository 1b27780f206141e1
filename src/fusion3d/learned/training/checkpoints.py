"""Training step 7, checkpoint: ``last.pt``, ``model.pt`` and ``history.csv`` (rank 0)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from fusion3d.io import atomic_path
from fusion3d.learned.training.resume import rng_state
from fusion3d.learned.training.run import StatePaths, TrainingRun

log = logging.getLogger(__name__)


def _save(obj: dict, path: Path) -> None:
    """``torch.save`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_history(rows: list[dict], path: Path) -> None:
    """Write the history rows as CSV, atomically."""
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def save_checkpoints(
    run: TrainingRun, epoch: int, score: float | None, is_best: bool, paths: StatePaths
) -> None:
    """Write ``model.pt`` (when ``is_best``), then ``last.pt`` and ``history.csv`` (rank 0 only).

    Both checkpoints describe themselves (:meth:`TrainingRun.record`); ``last.pt`` also
    holds the optimizer, the schedule, the best score, the validation checks since it
    (``checks_since_best``: early stopping resumes where it was), rank 0's RNG states and the split
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
            "checks_since_best": run.checks_since_best,
            "rng": rng_state(),
        },
        paths.last,
    )
    write_history(run.history, paths.history)
