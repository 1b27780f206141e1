"""Training: where a run keeps its state (:class:`StatePaths`) and what it holds in memory
(:class:`TrainingRun`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fusion3d.learned.distributed import DistContext
from fusion3d.learned.recipes import Recipe
from fusion3d.learned.recipes.dcfb import DCFB_RECIPE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatePaths:
    """The files of a training state folder (``train/<method>/<run>/state/``)."""

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
        """``history.csv``: one row per epoch (row 0 scores the initialisation); the last
        row of a finished run names why it stopped in its ``stop`` column."""
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
    checks_since_best: int = 0  # validation checks since the last improvement (patience)
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
