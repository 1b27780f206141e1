"""What every rule's script does around its one library call: send logging and stderr to
the rule's log (:func:`script_logging`), make the rule's threads reach ITK, BLAS and torch
(:func:`set_threads`), and size a training job's memory (:func:`training_memory_mb`)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def script_logging(log_path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send logging and stderr of a rule's script to its log file for the duration of the block.

    A failure is logged with its traceback before it propagates, so the rule's log explains it.
    """
    logger = logging.getLogger("fusion3d")
    if log_path is None:
        logging.basicConfig(level=logging.INFO)
        yield logger
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    handler = logging.StreamHandler(handle)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    old_stderr = sys.stderr
    sys.stderr = handle
    try:
        yield logger
    except BaseException:
        logger.exception("failed")
        raise
    finally:
        sys.stderr = old_stderr
        root.removeHandler(handler)
        handle.close()


def set_threads(threads: int) -> None:
    """Make ``threads`` reach ITK/ANTs, OpenMP/BLAS and torch in this process."""
    threads = max(1, int(threads))
    for name in (
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
    ):
        os.environ[name] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def training_memory_mb(n_subjects: int, grid: int, *, base_mb: int = 6000) -> int:
    """``mem_mb`` of a training job: ``base_mb`` plus every subject's model-grid pair.

    Training streams the pairs from a memory-mapped float32 cache (2 x grid^3 x 4 bytes: 16.8
    MB per subject at 128^3, so 660 subjects add 11,073 MB; Snakemake's ``mem_mb`` is in
    megabytes, 10^6 bytes). The process itself holds a few pairs at a time, but the cache's
    pages count against a job's cgroup memory limit while they are cached: with room for the
    whole cache every epoch after the first reads from memory instead of the disk.
    ``base_mb`` covers the interpreter, torch, the model, its optimizer and one batch (the
    default demo trains in 850 MB; the paper-sized network on CPU at 64^3 peaks at 3.1 GB).
    """
    if n_subjects < 0 or grid < 1:
        raise ValueError(f"n_subjects must be >= 0 and grid >= 1, got {n_subjects}, {grid}")
    return int(base_mb + math.ceil(n_subjects * 2 * grid**3 * 4 / 1e6))
