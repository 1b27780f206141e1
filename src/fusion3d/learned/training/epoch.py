"""Training step 5, the epoch loop: one epoch over the loader's batches."""

from __future__ import annotations

import logging
from functools import partial

import torch

from fusion3d.learned import distributed
from fusion3d.learned.devices import (
    autocast_context,
    memory_format,
    to_device,
)
from fusion3d.learned.training.data import TrainData
from fusion3d.learned.training.resume import seed_epoch
from fusion3d.learned.training.run import TrainingRun

log = logging.getLogger(__name__)


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
    seed_epoch(cfg["seed"], epoch, run.ctx.rank)
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
