"""Benchmark fusion3d.preprocess against synthetic ground truth.

Usage::

    python benchmarks/bench_preprocess.py --n-subjects 4 --threads 2 [--cohort-dir ROOT]
        [--brain-extraction deepbet|ants] [--work /tmp/bench_preprocess]

With ``--cohort-dir`` (a results root holding ``synthetic/download/ADNI`` and
``synthetic/truth``) the first N subjects of that generated cohort are used
(their PET DICOM converted with dcm2niix); without it, N pairs are made with
``fusion3d.preprocess.testing.make_pair`` at 1 mm T1 / 1.5 mm PET. Prints
Dice, PET->T1 and T1->MNI errors, wall time and peak memory per subject,
then medians/minimums against the targets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _cohort_pairs(root: Path, n: int, work: Path) -> list[tuple[str, Path, Path, Path]]:
    truth_root = root / "synthetic" / "truth"
    adni = root / "synthetic" / "download" / "ADNI"
    if not truth_root.is_dir() or not adni.is_dir():
        raise FileNotFoundError(f"{root}: expected synthetic/truth and synthetic/download/ADNI")
    dcm2niix = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    out = []
    for tdir in sorted(p for p in truth_root.iterdir() if p.is_dir())[:n]:
        ptid = tdir.name
        t1 = sorted((adni / ptid).rglob(f"ADNI_{ptid}_MR_*.nii*"))
        dcms = sorted((adni / ptid).rglob(f"ADNI_{ptid}_PT_*.dcm"))
        if not t1 or not dcms:
            raise FileNotFoundError(f"{adni / ptid}: T1 NIfTI or PET DICOM not found")
        pet_dir = work / "pet" / ptid
        pet_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [dcm2niix, "-z", "y", "-b", "n", "-f", "pet", "-o", str(pet_dir), str(dcms[0].parent)],
            check=True,
            capture_output=True,
        )
        out.append((ptid, t1[0], pet_dir / "pet.nii.gz", tdir))
    return out


def _own_pairs(n: int, work: Path) -> list[tuple[str, Path, Path, Path]]:
    from fusion3d.preprocess.testing import _rigid, make_pair

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-subjects", type=int, default=4)
    ap.add_argument("--cohort-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--brain-extraction", default="deepbet", choices=["deepbet", "ants"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_preprocess"))
    args = ap.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from fusion3d.preprocess import accuracy_against_truth, preprocess_pair

    args.work.mkdir(parents=True, exist_ok=True)
    if args.cohort_dir is not None:
        pairs = _cohort_pairs(args.cohort_dir, args.n_subjects, args.work)
    else:
        pairs = _own_pairs(args.n_subjects, args.work)
    rows = []
    for sid, t1, pet, truth in pairs:
        out = args.work / "out" / sid
        t0 = time.perf_counter()
        res = preprocess_pair(
            t1,
            pet,
            out,
            sid,
            options={"brain_extraction": args.brain_extraction},
            threads=args.threads,
        )
        wall = time.perf_counter() - t0
        acc = accuracy_against_truth(out, sid, truth)
        rows.append(
            {
                "subject": sid,
                "dice": acc["dice"],
                "pet_to_t1_mm": acc["pet_to_t1_error_mm"],
                "t1_to_mni_mm": acc["t1_to_mni_error_mm"],
                "wall_s": wall,
                "peak_rss_mb": res["qc"]["peak_rss_mb"],
                "flags": ";".join(f["flag"] for f in res["qc"]["flags"]),
            }
        )
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    df = pd.DataFrame(rows)
    checks = [
        ("Dice median >= 0.95", df.dice.median(), df.dice.median() >= 0.95),
        ("Dice min >= 0.90", df.dice.min(), df.dice.min() >= 0.90),
        ("PET->T1 median <= 1.5 mm", df.pet_to_t1_mm.median(), df.pet_to_t1_mm.median() <= 1.5),
        ("T1->MNI median <= 2.5 mm", df.t1_to_mni_mm.median(), df.t1_to_mni_mm.median() <= 2.5),
        ("wall median <= 60 s", df.wall_s.median(), df.wall_s.median() <= 60),
    ]
    print(
        f"\n{len(df)} subjects, threads={args.threads}, peak RSS max {df.peak_rss_mb.max():.0f} MB"
    )
    for name, value, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.3f}")
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
