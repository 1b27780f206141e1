"""Tests for fusion3d.distributed: torchrun's environment, gloo collectives with 2 processes."""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from fusion3d.distributed import (
    DistContext,
    all_reduce_sums,
    barrier,
    broadcast_buffers,
    init_distributed,
    on_rank0,
    teardown,
    torchrun_command,
)

CPU = torch.device("cpu")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(monkeypatch, rank, world, port):
    """The variables torchrun sets for one rank."""
    for key, value in {
        "RANK": rank,
        "LOCAL_RANK": rank,
        "WORLD_SIZE": world,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
    }.items():
        monkeypatch.setenv(key, str(value))


def test_single_process_without_torchrun(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    ctx = init_distributed(CPU)
    assert ctx == DistContext(0, 0, 1, CPU)
    assert not ctx.distributed and ctx.is_rank0
    assert all_reduce_sums(ctx, {"b": 2, "a": 1.5}) == {"a": 1.5, "b": 2.0}
    assert on_rank0(ctx, lambda x: x + 1, 1) == 2
    barrier(ctx)  # a no-op
    teardown()  # a no-op


def test_inconsistent_environment_is_named(monkeypatch):
    torchrun_env(monkeypatch, 2, 2, 1)
    with pytest.raises(ValueError, match="RANK=2 and WORLD_SIZE=2"):
        init_distributed(CPU)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        init_distributed(CPU)


def test_torchrun_command():
    cmd = torchrun_command(2, "fusion3d.training", ["spec.json"])
    assert cmd == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "fusion3d.training",
        "spec.json",
    ]
    with pytest.raises(ValueError, match="nproc"):
        torchrun_command(0, "m", [])


def _rank_main(rank, world, port, out_dir):
    """One rank: sum a metric, make BatchNorm buffers differ, then broadcast rank 0's."""
    import os

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    ctx = init_distributed(CPU, timeout_s=60)
    sums = all_reduce_sums(ctx, {"loss": rank + 1.0, "n": 1})
    bn = torch.nn.BatchNorm1d(3)
    bn(torch.randn(4, 3) * (rank + 1))  # running statistics differ per rank
    broadcast_buffers(ctx, bn)
    written = on_rank0(ctx, lambda: "rank0")
    barrier(ctx)
    teardown()
    result = {
        "sums": sums,
        "mean": bn.running_mean.tolist(),
        "var": bn.running_var.tolist(),
        "written": written,
        "distributed": ctx.distributed,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))


def test_two_gloo_ranks_reduce_and_share_buffers(tmp_path):
    port = free_port()
    mp.start_processes(_rank_main, args=(2, port, tmp_path), nprocs=2, start_method="fork")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["sums"] == r1["sums"] == {"loss": 3.0, "n": 2.0}
    assert r0["mean"] == r1["mean"] and r0["var"] == r1["var"]
    assert r0["written"] == "rank0" and r1["written"] is None
    assert r0["distributed"] and r1["distributed"]
