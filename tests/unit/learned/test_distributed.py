"""Tests for fusion3d.learned.distributed: torchrun's environment, gloo collectives with 2 processes."""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from fusion3d.learned.distributed import (
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
    cmd = torchrun_command(2, "fusion3d.learned.training", ["spec.json"])
    assert cmd == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "fusion3d.learned.training",
        "spec.json",
    ]
    with pytest.raises(ValueError, match="nproc"):
        torchrun_command(0, "m", [])


def _set_rank_env(rank, world, port):
    """The environment torchrun gives rank ``rank`` of ``world`` processes on this host."""
    import os

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def _rank_main(rank, world, port, out_dir):
    """One rank: sum a metric, make BatchNorm buffers differ, then broadcast rank 0's."""

    _set_rank_env(rank, world, port)
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


# ---------------------------------------------------------------------------------------------
# Data-parallel training (DDP over gloo, 2 CPU processes) on a tiny cohort
# ---------------------------------------------------------------------------------------------

MODEL = dict(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 1), patch_size=2, window_size=2)
TRAIN = {"epochs": 3, "lr": 3e-3, "augment": False, "seed": 7}


def make_cohort(root, n_subjects=4, size=16):
    """Synthetic model-grid pairs: a ball with different MRI / PET textures."""
    import numpy as np

    from fusion3d.io import save_nifti

    z, y, x = np.mgrid[:size, :size, :size] / size
    ball = ((z - 0.5) ** 2 + (y - 0.5) ** 2 + (x - 0.5) ** 2) < 0.16
    items = []
    for i in range(n_subjects):
        mri = ball * (0.5 + 0.3 * np.sin(8 * x + i))
        pet = ball * (0.4 + 0.3 * np.cos(6 * y + i))
        m = save_nifti(mri, np.eye(4), root / f"s{i}_mri.nii.gz", dtype=np.float32)
        p = save_nifti(pet, np.eye(4), root / f"s{i}_pet.nii.gz", dtype=np.float32)
        items.append((f"sub-{i}", m, p))
    return items


def _ddp_rank(rank, world, port, items, out_dir, spy_dir, train_config):
    """One rank of a DDP run; every rank's weights after each epoch go to ``spy_dir``."""

    from fusion3d.learned import training
    from fusion3d.learned.training import stage

    _set_rank_env(rank, world, port)
    save = stage.save_checkpoints

    def spy(run, epoch, *args):
        """Record this rank's state (rank 0 also writes the real checkpoints)."""
        torch.save(run.model.state_dict(), spy_dir / f"rank{rank}_epoch{epoch}.pt")
        save(run, epoch, *args)

    stage.save_checkpoints = spy  # where the stage looks it up
    training.train_model(
        items[:3], items[3:], out_dir, model_config=MODEL, train_config=train_config, threads=1
    )


def test_ddp_ranks_stay_identical_resume_with_one_rank_and_learn(tmp_path):
    import pandas as pd

    from fusion3d.learned.training import train_model

    items = make_cohort(tmp_path)
    out, spy = tmp_path / "state", tmp_path / "spy"
    spy.mkdir()
    cfg = {**TRAIN, "stop_after_epoch": 2}
    args = (2, free_port(), items, out, spy, cfg)
    mp.start_processes(_ddp_rank, args=args, nprocs=2, start_method="fork")
    for epoch in (1, 2):
        s0, s1 = (torch.load(spy / f"rank{r}_epoch{epoch}.pt") for r in (0, 1))
        assert s0.keys() == s1.keys()
        for key in s0:  # parameters and BatchNorm buffers
            assert torch.equal(s0[key], s1[key]), (epoch, key)
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 2
    for key, value in torch.load(spy / "rank1_epoch2.pt").items():
        assert torch.equal(last["model_state"][key], value)
    # resume the 2-rank state in one process (no torchrun variables): epoch 3 follows on
    train_model(items[:3], items[3:], out, model_config=MODEL, train_config=TRAIN, threads=1)
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3
    assert not list(out.glob("stale-*"))  # resumed, not set aside
    hist = pd.read_csv(out / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2, 3]
    loss = hist.set_index("epoch")["loss"]
    assert loss[3] < loss[2] < loss[1]


def test_train_with_torchrun_launches_the_ranks(tmp_path):
    """The workflow's path: ``python -m torch.distributed.run ... -m fusion3d.learned.training``."""
    from fusion3d.learned.training import train_with_torchrun

    items = make_cohort(tmp_path, n_subjects=3)
    out = tmp_path / "state"
    model = train_with_torchrun(
        items[:2],
        items[2:],
        out,
        model_config=MODEL,
        train_config={**TRAIN, "epochs": 1},
        nproc=2,
        gpu=False,
        threads=2,
    )
    assert model == out / "model.pt" and model.exists()
    spec = json.loads((out / "launch.json").read_text())
    assert spec["threads"] == 1 and spec["gpu"] is False
    assert spec["train_items"] == [[str(x) for x in item] for item in items[:2]]
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_train_with_torchrun_stops_at_once_without_gpus(tmp_path, monkeypatch):
    from fusion3d.learned.devices import GPUUnavailableError
    from fusion3d.learned.training import train_with_torchrun

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GPUUnavailableError, match="resources.gpus: 2"):
        train_with_torchrun(
            [("s", "nope", "nope")],
            [],
            tmp_path,
            model_config=MODEL,
            train_config={},
            nproc=2,
            gpu=True,
        )
    assert not (tmp_path / "launch.json").exists()


def test_train_rule_asks_for_gpus_in_a_dry_run(tmp_path):
    """``resources: {gpu: true, gpus: 2}``: train declares gpu=2 (SLURM --gpus=2), infer gpu=1."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    override = tmp_path / "gpus.yaml"
    override.write_text("resources: {gpu: true, gpus: 2}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "2",
            "--snakefile",
            str(repo / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(repo / "config" / "config.yaml"),
            str(override),
            "--",
            "results/train/dcfb3d/seed-3407/model.pt",
            "results/fused/dcfb3d/seed-3407/index.tsv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {}
    for block in result.stdout.split("rule ")[1:]:
        jobs[block.split(":", 1)[0]] = block
    assert "gpu=2" in jobs["train"], jobs["train"]
    assert "tasks_per_gpu=0" in jobs["train"]  # SLURM: one task that holds both GPUs
    assert "gpu=1" in jobs["infer"], jobs["infer"]
