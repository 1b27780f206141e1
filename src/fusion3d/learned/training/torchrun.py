"""Training on several GPUs: :func:`train_with_torchrun` launches torchrun, :func:`main`
is one rank (``python -m fusion3d.learned.training <launch.json>``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fusion3d.io import atomic_path
from fusion3d.learned import distributed
from fusion3d.learned.devices import (
    require_gpu,
)
from fusion3d.learned.training.config import Item, plain
from fusion3d.learned.training.run import StatePaths
from fusion3d.learned.training.stage import train_model

log = logging.getLogger(__name__)


def train_with_torchrun(
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    out_dir: str | os.PathLike,
    *,
    model_config: dict,
    train_config: dict,
    nproc: int,
    gpu: bool,
    threads: int | None = None,
    method: str = "dcfb",
) -> Path:
    """Run :func:`train_model` in ``nproc`` processes under torchrun on this node.

    The arguments go to ``out_dir/launch.json`` (written atomically); the command is
    :func:`fusion3d.learned.distributed.torchrun_command` ``(nproc, "fusion3d.learned.training",
    [launch.json])``, its output goes to this process's stderr (the rule's log). With
    ``gpu`` the job first checks that ``nproc`` CUDA devices are usable and stops at once
    otherwise. ``threads`` are shared out between the processes.

    Raises
    ------
    GPUUnavailableError
        ``gpu`` and fewer than ``nproc`` usable CUDA devices.
    RuntimeError
        When torchrun fails (its exit status; the ranks' errors are in the log above).
    """
    if gpu:
        require_gpu(nproc, what=f"resources.gpus: {nproc}")
    out = Path(out_dir)
    spec = {
        "train_items": [[str(x) for x in item] for item in train_items],
        "val_items": [[str(x) for x in item] for item in val_items],
        "out_dir": str(out),
        "model_config": plain(dict(model_config)),
        "train_config": plain(dict(train_config)),
        "gpu": bool(gpu),
        "threads": max(1, (threads or nproc) // nproc),
        "method": method,
    }
    launch = out / "launch.json"
    with atomic_path(launch) as tmp:
        tmp.write_text(json.dumps(spec, indent=1))
    cmd = distributed.torchrun_command(nproc, "fusion3d.learned.training", [launch])
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    src = str(Path(__file__).resolve().parents[1])  # this fusion3d, also in a checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    log.info("launching %d training processes: %s", nproc, " ".join(map(str, cmd)))
    sys.stderr.flush()
    result = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {result.returncode}: {' '.join(cmd)}")
    return StatePaths(out).model


def main(argv: Sequence[str] | None = None) -> int:
    """One torchrun rank: ``python -m fusion3d.learned.training <launch.json>`` (see
    :func:`train_with_torchrun`)."""
    ap = argparse.ArgumentParser(
        prog="python -m fusion3d.learned.training", description=main.__doc__
    )
    ap.add_argument("spec", type=Path, help="launch.json written by train_with_torchrun")
    spec_path = ap.parse_args(argv).spec
    try:
        spec = json.loads(spec_path.read_text())
        items = {k: [tuple(i) for i in spec[k]] for k in ("train_items", "val_items")}
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"{spec_path}: not a training launch spec ({exc!r})") from exc
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s"
    )
    train_model(
        items["train_items"],
        items["val_items"],
        spec["out_dir"],
        model_config=spec["model_config"],
        train_config=spec["train_config"],
        gpu=spec["gpu"],
        threads=spec["threads"],
        method=spec.get("method", "dcfb"),
    )
    return 0
