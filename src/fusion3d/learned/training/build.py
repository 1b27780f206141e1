"""Training step 3, build the model, loss, optimizer and schedule (and the DDP wrapper)."""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from fusion3d.learned.devices import (
    apply_channels_last,
    maybe_compile,
)
from fusion3d.learned.distributed import DistContext
from fusion3d.learned.recipes import Recipe
from fusion3d.learned.recipes.dcfb import DCFB_RECIPE
from fusion3d.learned.training.config import model_init_args
from fusion3d.learned.training.fingerprint import training_fingerprint
from fusion3d.learned.training.run import TrainingRun

log = logging.getLogger(__name__)


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
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s network: %d parameters", recipe.architecture, n_params)
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
