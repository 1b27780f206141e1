"""Training step 2, prepare the data: pairs checked once, cached memory-mapped, streamed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fusion3d.learned import distributed
from fusion3d.learned.data import AugmentConfig, augment_pair
from fusion3d.learned.distributed import DistContext
from fusion3d.learned.loader import (
    EpochSampler,
    PairDataset,
    PairSource,
    make_loader,
    prepare_sources,
)
from fusion3d.learned.training.config import Item
from fusion3d.learned.training.run import TrainingRun

log = logging.getLogger(__name__)


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
