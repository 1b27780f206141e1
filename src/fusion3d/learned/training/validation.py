"""Training step 6, validate and select: validation scores and the best model."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from fusion3d.learned import distributed
from fusion3d.learned.devices import (
    to_device,
)
from fusion3d.learned.distributed import DistContext
from fusion3d.learned.inference import fuse_tensor
from fusion3d.learned.loader import (
    PairDataset,
    PairSource,
)
from fusion3d.learned.losses import psnr, ssim
from fusion3d.learned.training.run import TrainingRun

log = logging.getLogger(__name__)


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
    improves; ``run.checks_since_best`` (early stopping: :func:`patience_spent`) counts the
    checks, validation epochs or every epoch without validation pairs, since the last
    improvement.
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
    run.checks_since_best = 0 if is_best else run.checks_since_best + 1
    return score, is_best


def patience_spent(run: TrainingRun) -> bool:
    """True when ``cfg["patience"]`` (``None``: off) checks in a row did not improve the
    score that selects ``model.pt`` (:func:`validate_and_select`)."""
    patience = run.cfg["patience"]
    return patience is not None and run.checks_since_best >= patience
