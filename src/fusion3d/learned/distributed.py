"""Data-parallel training on one node: process group, rank-0 writing, metric reduction.

``torchrun --standalone --nproc_per_node N`` (``python -m torch.distributed.run``)
starts N processes and gives each ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_distributed` reads them and joins the
process group (NCCL on CUDA, gloo on the CPU); without them it returns a
single-process context, so the same training code runs with and without torchrun.
Only rank 0 writes files (:func:`on_rank0`); metrics are summed over ranks with
:func:`all_reduce_sums`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistContext",
    "all_reduce_sums",
    "barrier",
    "broadcast_buffers",
    "init_distributed",
    "on_rank0",
    "teardown",
    "torchrun_command",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job.

    Attributes
    ----------
    rank, local_rank, world_size : int
        ``0, 0, 1`` without torchrun.
    device : torch.device
        The device of this rank (``cuda:<local_rank>`` on CUDA).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when a process group of more than one rank is up."""
        return self.world_size > 1

    @property
    def is_rank0(self) -> bool:
        """True on the rank that writes checkpoints, history and logs."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    """An integer environment variable set by torchrun (ValueError names it)."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def init_distributed(device: torch.device, *, timeout_s: float = 1800.0) -> DistContext:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1, else a single-process context.

    Parameters
    ----------
    device : torch.device
        The resolved device type: ``cuda`` -> NCCL backend and ``cuda:<LOCAL_RANK>``;
        ``cpu`` -> gloo.
    timeout_s : float
        Collective timeout.

    Raises
    ------
    ValueError
        When torchrun's variables are inconsistent (e.g. ``RANK`` >= ``WORLD_SIZE``) or
        a CUDA job has fewer visible devices than local ranks.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA device(s) "
                "are visible: start torchrun with --nproc_per_node <= the GPUs of the job"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world == 1:
        return DistContext(0, 0, 1, device)
    if not dist.is_initialized():
        from datetime import timedelta

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, device)
    return DistContext(rank, local, world, device)


def teardown() -> None:
    """Leave the process group (a no-op when none is up)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def on_rank0(ctx: DistContext, fn: Callable[..., T], *args, **kwargs) -> T | None:
    """Call ``fn`` on rank 0 only (writing files); other ranks get ``None``."""
    return fn(*args, **kwargs) if ctx.is_rank0 else None


def all_reduce_sums(ctx: DistContext, sums: Mapping[str, float]) -> dict[str, float]:
    """Sum each named number over ranks (every rank must pass the same keys).

    The values travel as one float64 tensor on the rank's device (NCCL needs CUDA
    tensors); the keys are sorted so that every rank packs them in the same order.
    """
    keys = sorted(sums)
    if not ctx.distributed:
        return {k: float(sums[k]) for k in keys}
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist(), strict=True))


def broadcast_buffers(ctx: DistContext, module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step each rank
    holds the statistics of its own last batch; this makes the ranks identical again
    (before validation and checkpoints).
    """
    if not ctx.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)


def torchrun_command(nproc: int, module: str, args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m <module> <args>``.

    ``--standalone`` starts a rendezvous on this node (one node, a free port), so jobs on
    the same node do not collide.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *map(str, args),
    ]
