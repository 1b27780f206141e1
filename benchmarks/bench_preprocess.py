"""Benchmark fusion3d.preprocess against synthetic ground truth.

Usage::

    # the ingested synthetic cohort (the real inputs: BIDS NIfTIs from pairs.tsv)
    python benchmarks/bench_preprocess.py --pairs-tsv ROOT/ingest/pairs.tsv \\
        --truth-dir ROOT/truth --threads 2 [--n-subjects 16] [--out-tsv rows.tsv]

    # generate + ingest a cohort into ROOT first (skipped when ROOT/ingest/pairs.tsv exists)
    python benchmarks/bench_preprocess.py --generate ROOT --n-subjects 16 --seed 0 --threads 2

    # no cohort: N small pairs from tests/fixtures_preprocess.make_pair (1 mm T1, 1.5 mm PET)
    python benchmarks/bench_preprocess.py --n-subjects 4 --threads 2

Each subject runs in a freshly spawned process (as in the workflow, one subject
per job), so ``--threads`` reaches ITK and the peak RSS is per subject. Prints
Dice, PET->T1 and T1->MNI errors, wall time (of ``preprocess_pair``) and peak RSS
per subject, then the distributions (median, min, max) against the targets and
the load average of the machine before and after.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd


def _ingested_pairs(
    pairs_tsv: Path, truth_dir: Path, base_dir: Path | None, n: int | None
) -> list[tuple[str, Path, Path, Path]]:
    if not pairs_tsv.exists():
        raise FileNotFoundError(f"{pairs_tsv}: pairs table not found")
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"{truth_dir}: truth folder not found")
    df = pd.read_csv(pairs_tsv, sep="\t", dtype=str)
    for col in ("participant_id", "session_id", "ptid", "mri_path", "pet_path"):
        if col not in df.columns:
            raise ValueError(f"{pairs_tsv}: missing column {col!r}")
    base = base_dir if base_dir is not None else Path.cwd()
    out = []
    for row in df.head(n if n else len(df)).itertuples():
        mri, pet = Path(row.mri_path), Path(row.pet_path)
        mri = mri if mri.is_absolute() else base / mri
        pet = pet if pet.is_absolute() else base / pet
        out.append((f"{row.participant_id}_{row.session_id}", mri, pet, truth_dir / row.ptid))
    return out


def _generate(root: Path, n: int, seed: int) -> tuple[Path, Path]:
    pairs_tsv = root / "ingest" / "pairs.tsv"
    if not pairs_tsv.exists():
        from fusion3d.ingest.run import run_ingest
        from fusion3d.synthetic import generate_cohort

        generate_cohort(root, n_subjects=n, seed=seed)
        run_ingest(
            download_dir=root / "download",
            manifests=sorted(glob.glob(str(root / "download" / "FUSION3D_SYNTHETIC_*.csv"))),
            adnimerge=root / "download" / "ADNIMERGE.csv",
            bids_dir=root / "bids",
            pairs_tsv=pairs_tsv,
            excluded_tsv=root / "ingest" / "excluded.tsv",
            options={"relative_to": None},
        )
    return pairs_tsv, root / "truth"


def _own_pairs(n: int, work: Path) -> list[tuple[str, Path, Path, Path]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixtures
    from fixtures_preprocess import _rigid, make_pair

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = _rigid(tuple(rng.uniform(-8, 8, 3)), tuple(rng.uniform(-10, 10, 3)))
        a = a @ np.diag([*rng.uniform(0.9, 1.15, 3), 1.0])
        b = _rigid(tuple(rng.uniform(-6, 6, 3)), tuple(rng.uniform(-8, 8, 3)))
        d = work / "pairs" / f"s{i:02d}"
        p = make_pair(d, t1_voxel_mm=1.0, pet_voxel_mm=1.5, a=a, b=b, seed=i)
        out.append((f"s{i:02d}", p["t1"], p["pet"], d))
    return out


def _one_subject(sid: str, t1: str, pet: str, out: str, truth: str, options: dict, threads: int):
    """Run in a fresh process: preprocess one subject and score it."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from fusion3d.preprocess import accuracy_against_truth, preprocess_pair

    t0 = time.perf_counter()
    res = preprocess_pair(t1, pet, out, sid, options=options, threads=threads)
    wall = time.perf_counter() - t0
    acc = accuracy_against_truth(out, sid, truth)
    return {
        "subject": sid,
        "dice": acc["dice"],
        "pet_to_t1_mm": acc["pet_to_t1_error_mm"],
        "t1_to_mni_mm": acc["t1_to_mni_error_mm"],
        "wall_s": wall,
        "peak_rss_mb": res["qc"]["peak_rss_mb"],
        "itk_threads": res["qc"].get("itk_threads"),
        "flags": ";".join(f["flag"] for f in res["qc"]["flags"]),
        **{f"t_{k}": v for k, v in res["qc"]["times_s"].items() if k != "total"},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs-tsv", type=Path, default=None)
    ap.add_argument("--truth-dir", type=Path, default=None)
    ap.add_argument("--base-dir", type=Path, default=None, help="resolves relative pairs paths")
    ap.add_argument("--generate", type=Path, default=None, metavar="ROOT")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-subjects", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--brain-extraction", default="deepbet", choices=["deepbet", "ants"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_preprocess"))
    ap.add_argument("--out-tsv", type=Path, default=None)
    args = ap.parse_args(argv)
    if (args.pairs_tsv is None) != (args.truth_dir is None):
        ap.error("--pairs-tsv and --truth-dir go together")

    args.work.mkdir(parents=True, exist_ok=True)
    if args.generate is not None:
        args.pairs_tsv, args.truth_dir = _generate(args.generate, args.n_subjects or 16, args.seed)
    if args.pairs_tsv is not None:
        pairs = _ingested_pairs(args.pairs_tsv, args.truth_dir, args.base_dir, args.n_subjects)
    else:
        pairs = _own_pairs(args.n_subjects or 4, args.work)
    options = {"brain_extraction": args.brain_extraction}
    load_before = os.getloadavg()
    ctx = multiprocessing.get_context("spawn")
    rows = []
    t_all = time.perf_counter()
    for sid, t1, pet, truth in pairs:
        out = args.work / "out" / sid
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            job = (sid, str(t1), str(pet), str(out), str(truth), options, args.threads)
            rows.append(pool.submit(_one_subject, *job).result())
        cols = ["subject", "dice", "pet_to_t1_mm", "t1_to_mni_mm", "wall_s", "peak_rss_mb", "flags"]
        line = pd.DataFrame(rows[-1:])[cols].to_string(index=False, header=len(rows) == 1)
        print(line, f"load {os.getloadavg()[0]:.2f}", flush=True)
    total = time.perf_counter() - t_all
    load_after = os.getloadavg()
    df = pd.DataFrame(rows)
    if args.out_tsv is not None:
        from fusion3d.io import write_tsv

        write_tsv(df, args.out_tsv)
    print(f"\n{len(df)} subjects, threads={args.threads}, all subjects {total:.1f} s")
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}")
    print(
        df[["dice", "pet_to_t1_mm", "t1_to_mni_mm", "wall_s", "peak_rss_mb"]]
        .describe()
        .loc[["50%", "min", "max"]]
        .rename(index={"50%": "median"})
        .to_string(float_format=lambda v: f"{v:.3f}")
    )
    steps = [c for c in df.columns if c.startswith("t_")]
    print("median step times (s):", {c[2:]: round(float(df[c].median()), 2) for c in steps})
    checks = [
        ("Dice median >= 0.95", df.dice.median(), df.dice.median() >= 0.95),
        ("Dice min >= 0.90", df.dice.min(), df.dice.min() >= 0.90),
        ("PET->T1 median <= 1.5 mm", df.pet_to_t1_mm.median(), df.pet_to_t1_mm.median() <= 1.5),
        ("T1->MNI median <= 2.5 mm", df.t1_to_mni_mm.median(), df.t1_to_mni_mm.median() <= 2.5),
        ("wall median <= 60 s", df.wall_s.median(), df.wall_s.median() <= 60),
    ]
    for name, value, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.3f}")
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
