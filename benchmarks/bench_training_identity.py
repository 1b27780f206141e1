"""Do two checkouts train the same networks? Hashes of tiny trainings of every architecture.

Trains a tiny DC2Fusion (3D, stochastic depth 0.2, the published augmentation), SwinFuse
(every block run, stochastic depth), MATR (dropout and stochastic depth 0.1) and DILRAN on four
random 32^3 subjects (3 train, 1 validation), seeded, on the CPU, and prints per network the
SHA-256 of ``model.pt``'s weights and of ``history.csv`` without its ``seconds`` and ``stop``
columns, and where and why each run stopped (``stop``: the last row's mark; a checkout from
before early stopping has no mark, so compare the other keys with it).
Run it with each checkout's ``src`` first on ``PYTHONPATH`` and compare the two outputs::

    PYTHONPATH=<before>/src python benchmarks/bench_training_identity.py /tmp/before > before.json
    PYTHONPATH=<after>/src python benchmarks/bench_training_identity.py /tmp/after > after.json
    diff before.json after.json    # empty: bit-identical trainings

About 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from fusion3d.io import save_nifti
from fusion3d.learned.training import train_model

CASES = {
    "dcfb3d": (
        {"spatial_dims": 3, "patch_size": 2, "embed_dim": 4, "depths": [1, 1], "num_heads": [1, 2]},
        {"epochs": 2, "augment": True},
    ),
    "swinfuse": (
        {
            "img_size": 32,
            "window_size": 8,
            "embed_dim": 8,
            "num_heads": [1, 1, 2],
            "run_all_blocks": True,
        },
        {"epochs": 2},
    ),
    "matr": (
        {"drop": 0.1, "drop_path": 0.1},
        {"epochs": 1, "batch_size": 4, "slices_per_volume": 2},
    ),
    "dilran": ({"channels": 8, "recon_channels": [8, 4]}, {"epochs": 2}),
}


def _subjects(root: Path) -> list[tuple[str, Path, Path]]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        pair = [rng.random((32, 32, 32)).astype(np.float32) for _ in range(2)]
        paths = [
            save_nifti(v, np.eye(4), root / f"s{i}_{n}.nii.gz", dtype=np.float32)
            for v, n in zip(pair, ("mri", "pet"), strict=True)
        ]
        items.append((f"s{i}", *paths))
    return items


def _history_without_seconds_and_stop(path: Path) -> str:
    rows = list(csv.DictReader(path.open()))
    out = io.StringIO()
    for row in rows:
        row.pop("seconds", None)
        row.pop("stop", None)
        out.write(json.dumps(row, sort_keys=True) + "\n")
    return hashlib.sha256(out.getvalue().encode()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="a new folder for the data and the runs")
    root = ap.parse_args().root
    root.mkdir(parents=True, exist_ok=True)
    items = _subjects(root)
    result = {}
    for method, (model_config, train_config) in CASES.items():
        out = root / method
        train_model(
            items[:3], items[3:], out, model_config=model_config,
            train_config={**train_config, "num_workers": 0}, threads=1, method=method,
        )  # fmt: skip
        state = torch.load(out / "model.pt", weights_only=True)["model_state"]
        digest = hashlib.sha256()
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].cpu().numpy().tobytes())
        result[method] = {
            "weights": digest.hexdigest(),
            "history": _history_without_seconds_and_stop(out / "history.csv"),
        }
        last = list(csv.DictReader((out / "history.csv").open()))[-1]
        if last.get("stop"):
            result[method]["stop"] = f"epoch {last['epoch']}: {last['stop']}"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
