"""Train DC2Fusion (2D or 3D) with checkpointing, exact resume and validation-based selection.

Writes under ``out_dir``: ``checkpoints/last.pt`` (every epoch), ``model.pt`` (best
validation score), ``history.csv`` (one row per epoch; row 0 scores the
initialisation). Every file is written atomically; every checkpoint loads with
``torch.load(..., weights_only=True)``.

Reproducibility: the model is initialised from ``seed``; every epoch reseeds torch,
numpy and ``random`` from ``(seed, epoch)``, so a run stopped after epoch k and
resumed from ``last.pt`` ends with exactly the weights of an uninterrupted run (CPU).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fusion3d.inference import autocast_context, fuse_volume, resolve_device
from fusion3d.io import atomic_path
from fusion3d.losses import TERMS, FusionLoss, psnr, ssim
from fusion3d.models import DC2Fusion, build_model
from fusion3d.training_data import (
    AugmentConfig,
    VolumePair,
    augment_pair,
    foreground_slices,
    load_items,
)

__all__ = [
    "DEFAULT_TRAIN_CONFIG",
    "calibrate_output_scale",
    "resolve_train_config",
    "train_model",
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
    "amp": "auto",
    "slices_per_volume": 8,
    "stop_after_epoch": None,
    "calibrate_output": True,
}


def resolve_train_config(train_config: dict | None) -> dict:
    """Merge with :data:`DEFAULT_TRAIN_CONFIG` and check every key (ValueError names it)."""
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
    for key in ("lr", "poly_power"):
        if not (isinstance(cfg[key], int | float) and math.isfinite(cfg[key]) and cfg[key] > 0):
            raise ValueError(f"train_config[{key!r}] must be a positive number, got {cfg[key]!r}")
    if cfg["amp"] not in ("auto", "bf16", "off", True, False):
        raise ValueError(f"train_config['amp'] must be 'auto', 'bf16' or 'off', got {cfg['amp']!r}")
    if cfg["stop_after_epoch"] is not None and (
        not isinstance(cfg["stop_after_epoch"], int) or cfg["stop_after_epoch"] < 1
    ):
        raise ValueError(
            f"train_config['stop_after_epoch'] must be None or a positive integer, "
            f"got {cfg['stop_after_epoch']!r}"
        )
    cfg["loss_weights"] = {k: float(v) for k, v in dict(cfg["loss_weights"]).items()}
    cfg["loss_terms"] = list(cfg["loss_terms"])
    cfg["augment"] = bool(cfg["augment"])
    cfg["calibrate_output"] = bool(cfg["calibrate_output"])
    FusionLoss(3, cfg["loss_weights"], cfg["loss_terms"])  # validates weights and terms
    return cfg


def _plain_config(model_config: dict) -> dict:
    """Model kwargs with sequences as lists (primitive, comparable, weights_only-safe)."""
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in model_config.items()}


def _rng_state() -> dict:
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


def _save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_history(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


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


def train_model(
    train_items: Sequence[tuple[str, str | os.PathLike, str | os.PathLike]],
    val_items: Sequence[tuple[str, str | os.PathLike, str | os.PathLike]],
    out_dir: str | os.PathLike,
    *,
    model_config: dict,
    train_config: dict,
    device: str | None = None,
    threads: int | None = None,
) -> Path:
    """Train (or resume) a DC2Fusion model and return the path of ``model.pt``.

    Parameters
    ----------
    train_items, val_items : sequence
        ``(subject_id, mri_path, pet_path)`` on the model grid (cubes in [0, 1]).
        Validation selects ``model.pt``; test data must never be passed here.
    out_dir : path
        Receives ``checkpoints/last.pt``, ``model.pt`` and ``history.csv``.
    model_config : dict
        :class:`~fusion3d.models.DC2Fusion` init kwargs.
    train_config : dict
        Keys of :data:`DEFAULT_TRAIN_CONFIG` (all optional): ``epochs``, ``lr``,
        ``poly_power``, ``seed``, ``batch_size``, ``loss_weights``, ``loss_terms``,
        ``augment``, ``amp`` ("auto": bf16 on CUDA, off on CPU), ``slices_per_volume``
        (2D), ``stop_after_epoch`` (stop early, e.g. to test resuming).
    device : str, optional
        ``None``: CUDA if available, else CPU (with a warning).
    threads : int, optional
        ``torch.set_num_threads``.

    Returns
    -------
    pathlib.Path
        ``out_dir / "model.pt"``.
    """
    cfg = resolve_train_config(train_config)
    mcfg = _plain_config(model_config)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    model_path = out / "model.pt"
    hist_path = out / "history.csv"

    train_pairs = load_items(train_items, what="train_items")
    val_pairs = load_items(val_items, what="val_items") if len(val_items) else []
    if not val_pairs:
        log.warning("no validation items: model.pt is selected on the training loss")

    torch.manual_seed(cfg["seed"])
    model = build_model(mcfg).to(dev)
    shape = train_pairs[0].mri.shape
    grid = shape[:2] if model.spatial_dims == 2 else shape
    if any(s % model.size_divisor for s in grid):
        raise ValueError(
            f"{train_items[0][1]}: grid {shape} not divisible by the model's size divisor "
            f"{model.size_divisor} (patch_size * 2**(stages-1) * window_size)"
        )
    if val_pairs and val_pairs[0].mri.shape != shape:
        raise ValueError(
            f"{val_items[0][1]}: validation grid {val_pairs[0].mri.shape} differs from training {shape}"
        )
    loss_fn = FusionLoss(model.spatial_dims, cfg["loss_weights"], cfg["loss_terms"]).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    epochs, power = cfg["epochs"], cfg["poly_power"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: max(0.0, 1.0 - e / epochs) ** power
    )
    aug = AugmentConfig()

    start_epoch, best_score, history = 1, -math.inf, []
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("config") != mcfg:
            raise ValueError(
                f"{ckpt_path}: checkpoint model config {ckpt.get('config')} differs from {mcfg}; "
                "remove the checkpoint or use the same config"
            )
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        scheduler.load_state_dict(ckpt["scheduler_state"])
        _set_rng_state(ckpt["rng"])
        start_epoch, best_score = int(ckpt["epoch"]) + 1, float(ckpt["best_score"])
        if hist_path.exists():
            history = [
                r for r in pd.read_csv(hist_path).to_dict("records") if r["epoch"] <= ckpt["epoch"]
            ]
        log.info("resuming from %s after epoch %d", ckpt_path, ckpt["epoch"])
    else:
        if cfg["calibrate_output"]:
            gen0 = _seed_epoch(cfg["seed"], 0)
            m0, p0 = next(_batches(train_pairs, model, cfg, gen0))
            factor = calibrate_output_scale(model, m0.to(dev), p0.to(dev))
            log.info("initial output scale calibrated: head_out x %.4g", factor)
    if start_epoch == 1 and val_pairs:
        init = validation_scores(model, val_pairs, dev, cfg["amp"])
        history.append(
            {"epoch": 0, "lr": float("nan"), "loss": float("nan"), **init, "seconds": 0.0}
        )
        log.info("epoch 0 (initialisation): %s", _fmt(init))
        _write_history(history, hist_path)

    last_epoch = epochs if cfg["stop_after_epoch"] is None else min(epochs, cfg["stop_after_epoch"])
    for epoch in range(start_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        gen = _seed_epoch(cfg["seed"], epoch)
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        sums: dict[str, float] = {}
        n = 0
        for mri, pet in _batches(train_pairs, model, cfg, gen):
            if cfg["augment"]:
                mri, pet = augment_pair(mri, pet, gen, aug)
            mri, pet = mri.to(dev), pet.to(dev)
            with autocast_context(dev, cfg["amp"]):
                fused = model(mri, pet)
            loss, parts = loss_fn(fused.float(), mri, pet)
            if not torch.isfinite(loss):
                raise ValueError(f"epoch {epoch}: non-finite loss {float(loss)} ({parts})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        scheduler.step()
        row = {"epoch": epoch, "lr": lr, **{k: v / n for k, v in sums.items()}}
        if val_pairs:
            row.update(validation_scores(model, val_pairs, dev, cfg["amp"]))
            score = row["val_score"]
        else:
            score = -row["loss"]
        row["seconds"] = time.perf_counter() - t0
        if score > best_score:
            best_score = score
            _save(
                {
                    "config": mcfg,
                    "train_config": cfg,
                    "model_state": model.state_dict(),
                    "epoch": epoch,
                    "score": score,
                },
                model_path,
            )
        _save(
            {
                "config": mcfg,
                "train_config": cfg,
                "model_state": model.state_dict(),
                "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict(),
                "epoch": epoch,
                "best_score": best_score,
                "rng": _rng_state(),
            },
            ckpt_path,
        )
        history.append(row)
        _write_history(history, hist_path)
        log.info("epoch %d/%d %s", epoch, epochs, _fmt(row))
    if not model_path.exists():
        raise ValueError(f"{out}: training ran no epoch (start {start_epoch}, last {last_epoch})")
    return model_path


def _fmt(row: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
