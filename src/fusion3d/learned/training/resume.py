"""Training step 4, resume or start: RNG states, stale state set aside, exact resume."""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fusion3d.learned import distributed
from fusion3d.learned.loader import (
    PairSource,
    epoch_seed,
    sample_seed,
)
from fusion3d.learned.training.data import first_batch
from fusion3d.learned.training.fingerprint import fingerprint_changes
from fusion3d.learned.training.run import StatePaths, TrainingRun

log = logging.getLogger(__name__)


def rng_state() -> dict:
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
    """Restore the global RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
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
    seed_epoch(run.cfg["seed"], 0)
    m0, p0 = first_batch(run, train_sources)
    line = run.recipe.on_fresh_start(run.model, m0.to(device), p0.to(device), run.cfg)
    if line:
        log.info("%s", line)
    return False


def _resume(run: TrainingRun, ckpt: dict, paths: StatePaths) -> None:
    """Load model, optimizer, scheduler, RNG states, epoch, best score, the checks since it
    and history (without its ``stop`` marks: the loop marks where this run stops).

    A checkpoint written before early stopping has no ``checks_since_best``: 0.
    """
    run.model.load_state_dict(ckpt["model_state"])
    run.optimizer.load_state_dict(ckpt["optimizer_state"])
    run.scheduler.load_state_dict(ckpt["scheduler_state"])
    _set_rng_state(ckpt["rng"])
    run.start_epoch, run.best_score = int(ckpt["epoch"]) + 1, float(ckpt["best_score"])
    run.checks_since_best = int(ckpt.get("checks_since_best", 0))
    if paths.history.exists():
        rows = pd.read_csv(paths.history).to_dict("records")
        run.history = [
            {k: v for k, v in r.items() if k != "stop"} for r in rows if r["epoch"] <= ckpt["epoch"]
        ]
    log.info("resuming from %s after epoch %d", paths.last, ckpt["epoch"])
