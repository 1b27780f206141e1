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

The package, one module per step (its section headers before the split):
:mod:`.config` (1. resolve the configs), :mod:`.data` (2. prepare the data), :mod:`.build`
(3. build the model, loss, optimizer and schedule), :mod:`.resume` (4. resume or start),
:mod:`.epoch` (5. the epoch loop), :mod:`.validation` (6. validate and select),
:mod:`.checkpoints` (7. checkpoint); :mod:`.fingerprint` (what a checkpoint belongs to),
:mod:`.run` (a run's state paths and memory), :mod:`.stage` (:func:`train_model`) and
:mod:`.torchrun` (several GPUs). Every public name is importable from this package.
"""

from __future__ import annotations

from fusion3d.learned.recipes.dcfb import calibrate_output_scale
from fusion3d.learned.training.build import build_training, wrap_for_training
from fusion3d.learned.training.checkpoints import save_checkpoints
from fusion3d.learned.training.config import (
    DEFAULT_TRAIN_CONFIG,
    model_init_args,
    resolve_train_config,
)
from fusion3d.learned.training.data import TrainData, build_loader, prepare_data
from fusion3d.learned.training.epoch import train_epoch
from fusion3d.learned.training.fingerprint import fingerprint_changes, training_fingerprint
from fusion3d.learned.training.resume import resume_or_start, set_aside_state
from fusion3d.learned.training.run import StatePaths, TrainingRun
from fusion3d.learned.training.stage import train_model
from fusion3d.learned.training.torchrun import train_with_torchrun
from fusion3d.learned.training.validation import validate_and_select, validation_scores

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
