"""Indexing time of pybids and bids2table on a generated 660-subject Clinica-layout dataset.

Writes a BIDS dataset in the layout of ``clinica convert adni-to-bids`` (empty NIfTI files: an
indexer reads names and sidecars, not pixels): 660 subjects, ``ses-M000`` for all and
``ses-M012`` for every third, each session with a T1w, an FDG PET and an amyloid PET, JSON
sidecars, ``participants.tsv``, ``sessions.tsv`` and ``scans.tsv``. Then, ``--repeats`` times,
in a fresh process each (no warm cache of the library):

- pybids: ``BIDSLayout(root, validate=False)`` (indexes the sidecars) and the T1w/PET query
  with each image's metadata;
- bids2table: ``index_dataset(root)`` and ``load_bids_metadata`` of each T1w/PET image.

Both give the study the same thing: every T1w and PET image with its entities and sidecar.

Run::

    python benchmarks/bench_bids_index.py --out benchmarks/results/bids_index.json \
        --figure docs/figures/bids_index.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

N_SUBJECTS = 660

_PYBIDS = """
import time, sys
t0 = time.perf_counter()
from bids import BIDSLayout
layout = BIDSLayout(sys.argv[1], validate=False)
files = layout.get(suffix=["T1w", "pet"], extension=[".nii.gz"])
meta = [f.get_metadata() for f in files]
print(time.perf_counter() - t0, len(files))
"""
_BIDS2TABLE = """
import time, sys
t0 = time.perf_counter()
import bids2table
table = bids2table.index_dataset(sys.argv[1]).to_pandas()
images = table[table["suffix"].isin(["T1w", "pet"]) & (table["ext"] == ".nii.gz")]
meta = [bids2table.load_bids_metadata(f"{r}/{p}") for r, p in zip(images["root"], images["path"])]
print(time.perf_counter() - t0, len(images))
"""


def write_layout(root: Path, n_subjects: int = N_SUBJECTS) -> int:
    """Write the dataset; return the number of image files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "bench", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    groups = ("CN", "MCI", "AD")
    participants = ["participant_id\tsex\tdiagnosis_sc"]
    n_images = 0
    for i in range(n_subjects):
        sub = f"sub-ADNI{i // 1000:03d}S{i:04d}"
        participants.append(f"{sub}\tF\t{groups[i % 3]}")
        sessions = ["ses-M000"] + (["ses-M012"] if i % 3 == 0 else [])
        (root / sub).mkdir()
        rows = ["session_id\tdiagnosis\tacq_time"]
        for k, ses in enumerate(sessions):
            rows.append(f"{ses}\t{groups[i % 3]}\t20{10 + k}-01-01")
            scans = ["filename\tacq_time"]
            for datatype, suffix, meta in (
                ("anat", "T1w", {"MagneticFieldStrength": 3}),
                ("pet", "trc-18FFDG_rec-coregavg_pet", {"TracerName": "FDG"}),
                ("pet", "trc-18FAV45_rec-coregavg_pet", {"TracerName": "AV45"}),
            ):
                folder = root / sub / ses / datatype
                folder.mkdir(parents=True, exist_ok=True)
                stem = f"{sub}_{ses}_{suffix}"
                (folder / f"{stem}.nii.gz").write_bytes(b"")
                (folder / f"{stem}.json").write_text(json.dumps(meta))
                scans.append(f"{datatype}/{stem}.nii.gz\t20{10 + k}-01-01T10:00:00")
                n_images += 1
            (root / sub / ses / f"{sub}_{ses}_scans.tsv").write_text("\n".join(scans) + "\n")
        (root / sub / f"{sub}_sessions.tsv").write_text("\n".join(rows) + "\n")
    (root / "participants.tsv").write_text("\n".join(participants) + "\n")
    return n_images


def time_library(code: str, root: Path) -> tuple[float, int]:
    """Seconds (import + index + metadata) and images found, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True
    )
    seconds, count = out.stdout.split()[-2:]
    return float(seconds), int(count)


def _figure(results: dict, path: Path) -> None:
    """A bar chart of the median time of each library, with every repeat as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["libraries"])
    fig, ax = plt.subplots(figsize=(5, 2.4))
    for k, name in enumerate(names):
        runs = results["libraries"][name]["seconds"]
        ax.barh(k, statistics.median(runs), color="#8fb3d9")
        ax.plot(runs, [k] * len(runs), "k.", ms=4)
        ax.text(statistics.median(runs), k, f" {statistics.median(runs):.1f} s", va="center")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("seconds to index (import, files, sidecars)")
    ax.set_title(f"{results['n_subjects']} subjects, {results['n_images']} images", fontsize=9)
    ax.set_xlim(0, max(max(v["seconds"]) for v in results["libraries"].values()) * 1.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    """Generate the layout, time both libraries, write the JSON (and the figure)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=N_SUBJECTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bids"
        n_images = write_layout(root, args.subjects)
        results = {"n_subjects": args.subjects, "n_images": n_images, "libraries": {}}
        for name, code in (("bids2table", _BIDS2TABLE), ("pybids", _PYBIDS)):
            runs = [time_library(code, root) for _ in range(args.repeats)]
            results["libraries"][name] = {
                "seconds": [round(s, 2) for s, _ in runs],
                "images_found": runs[0][1],
            }
            print(name, results["libraries"][name], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.figure:
        _figure(results, args.figure)
    return results


if __name__ == "__main__":
    main()
