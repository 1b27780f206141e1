"""Benchmark the synthetic cohort generator: per-subject time and total; optionally its QC.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_synthetic.py [--n-subjects 16] [--out DIR]
    # also ingest and preprocess the first N pairs and print their QC figures and accuracy
    .venv/bin/python benchmarks/bench_synthetic.py --n-subjects 4 --no-quirks --qc 4 --out DIR
    # the PET statistics of issue 33 (contrast, noise, smoothness) beside real FDG's, for the
    # realistic FDG PET as the workflow renders it by default (cohort.synthetic.pet), for
    # other settings of it, or for the clean PET of the studies before 2026-12-07
    .venv/bin/python benchmarks/bench_synthetic.py --n-subjects 8 --no-quirks --pet-stats 8
    .venv/bin/python benchmarks/bench_synthetic.py --n-subjects 4 --no-quirks --pet-stats 4 \
        --pet noise=0.12 recon_fwhm_mm=3 white_matter=0.15   # the convergence study's
    .venv/bin/python benchmarks/bench_synthetic.py --n-subjects 4 --no-quirks --pet-stats 4 --pet-clean

Target (docs): 16 subjects with quirks in about 1-2 min on 2 cores. The QC figures
of real heads (issue 15): T1->MNI correlation after affine registration 0.53-0.61,
brain masks 1,480-1,790 ml.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


def _timed_generation(out: Path, args: argparse.Namespace):
    """Generate the cohort into ``out`` (one process), printing each subject's time."""
    from fusion3d.synthetic import cohort, generate_cohort
    from fusion3d.synthetic.anatomy import brain_structure, template_space
    from fusion3d.synthetic.pet import pet_maps

    timings: list[tuple[str, float]] = []
    original = cohort._render_subject

    def timed(plan, *a, **k):
        t0 = time.perf_counter()
        rows = original(plan, *a, **k)
        timings.append((plan.ptid, time.perf_counter() - t0))
        print(
            f"  {plan.ptid} {plan.group:3s} {len(rows)} images  {timings[-1][1]:6.2f} s", flush=True
        )
        return rows

    cohort._render_subject = timed
    t_start = time.perf_counter()
    template_space()
    brain_structure()
    pet_maps()
    print(f"template head + brain maps + uptake maps: {time.perf_counter() - t_start:.2f} s")
    try:
        pet = None if args.pet_clean else {"realistic": True, **_pet_settings(args.pet)}
        summary = generate_cohort(
            out,
            n_subjects=args.n_subjects,
            seed=args.seed,
            quirks=not args.no_quirks,
            pet=pet,
            # the workflow's default regional uptake variation, none with the clean PET
            regional_uptake_variation=None if args.pet_clean else {},
        )
    finally:
        cohort._render_subject = original
    return summary, [t for _, t in timings], time.perf_counter() - t_start


def _pet_settings(pairs: list[str]) -> dict[str, float]:
    """``KEY=VALUE`` strings of ``--pet`` as a ``cohort.synthetic.pet`` mapping."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"bench_synthetic: --pet {pair!r}: expected KEY=VALUE")
        settings[key] = float(value)
    return settings


def _ingest(out: Path) -> Path:
    """Ingest the cohort in ``out`` (once); return its pairs.tsv."""
    from fusion3d.ingest.run import run_ingest

    pairs_tsv = out / "ingest" / "pairs.tsv"
    if pairs_tsv.exists():
        return pairs_tsv
    run_ingest(
        download_dir=out / "download",
        manifests=sorted(glob.glob(str(out / "download" / "FUSION3D_SYNTHETIC_*.csv"))),
        adnimerge=out / "download" / "ADNIMERGE.csv",
        bids_dir=out / "bids",
        pairs_tsv=pairs_tsv,
        excluded_tsv=out / "ingest" / "excluded.tsv",
        options={"relative_to": None},
    )
    return pairs_tsv


def _pet_stats(out: Path, n: int) -> None:
    """Print issue 33's PET statistics of the first ``n`` ingested PETs beside real FDG's."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from fusion3d.synthetic.petstats import REAL_FDG_RANGES, pet_statistics

    rows = []
    for r in pd.read_csv(_ingest(out), sep="\t", dtype=str).head(n).itertuples():
        img = nib.load(r.pet_path)
        vol = np.asarray(img.dataobj, dtype=np.float32)
        stats = pet_statistics(vol if vol.ndim == 3 else vol.mean(-1), img.header.get_zooms()[:3])
        rows.append({"ptid": r.ptid, **{k: stats[k] for k in REAL_FDG_RANGES}})
    table = pd.DataFrame(rows)
    print("PET statistics (issue 33's method) of the ingested PET, with real FDG's range:")
    for key, (lo, hi) in REAL_FDG_RANGES.items():
        v = table[key]
        inside = int(((v >= lo) & (v <= hi)).sum())
        print(
            f"  {key:22s} synthetic {v.min():.3f}-{v.max():.3f} (median {v.median():.3f})  "
            f"real {lo:g}-{hi:g}  "
            f"in range: {inside}/{len(v)}"
        )
    print(table.round(3).to_string(index=False))


def _qc_rows(out: Path, n: int, threads: int) -> list[dict]:
    """Ingest the cohort in ``out``, preprocess its first ``n`` pairs; QC and accuracy rows."""
    import pandas as pd

    from fusion3d.preprocess import accuracy_against_truth, preprocess_pair

    pairs_tsv = _ingest(out)
    rows = []
    for r in pd.read_csv(pairs_tsv, sep="\t", dtype=str).head(n).itertuples():
        sid, pre = f"{r.participant_id}_{r.session_id}", out / "preprocess"
        qc = preprocess_pair(r.mri_path, r.pet_path, pre / sid, sid, threads=threads)["qc"]
        acc = accuracy_against_truth(pre / sid, sid, out / "truth" / r.ptid)
        truth = json.loads((out / "truth" / r.ptid / "truth.json").read_text())
        rows.append(
            {
                "ptid": r.ptid,
                "group": r.group,
                "mask_ml": qc["mask_volume_ml"],
                "true_mask_ml": truth["volumes_ml"]["brain"],
                "ventricles_ml": truth["volumes_ml"]["ventricles"],
                "t1_mni_ncc": round(qc["registration"]["t1_to_mni"]["similarity_after"], 3),
                "pet_t1_mi": round(qc["registration"]["pet_to_t1"]["similarity_after"], 3),
                "pet_peak_offset_mm": qc["registration"]["pet_to_t1"]["peak"]["peak_offset_mm"],
                "flags": ",".join(f["flag"] for f in qc["flags"]) or "-",
                "dice": round(acc["dice"], 4),
                "pet_t1_err_mm": round(acc["pet_to_t1_error_mm"], 2),
                "t1_mni_err_mm": round(acc["t1_to_mni_error_mm"], 2),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    """Run the generator once and print the timings (and the QC figures with ``--qc``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subjects", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-quirks", action="store_true")
    parser.add_argument("--qc", type=int, default=0, metavar="N", help="preprocess N pairs")
    parser.add_argument("--threads", type=int, default=2, help="threads of preprocessing")
    parser.add_argument("--pet-stats", type=int, default=0, metavar="N", help="PET statistics of N")
    parser.add_argument("--pet-clean", action="store_true", help="the clean PET (realistic off)")
    parser.add_argument(
        "--pet",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="realistic-mode settings (cohort.synthetic.pet: noise, fwhm_mm, recon_fwhm_mm, "
        "white_matter); default: the schema's",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the cohort here (default: a temp dir)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synthetic_"))
    summary, per, total = _timed_generation(out, args)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"subjects rendered: {len(per)} (incl. extra), images: {len(summary)}")
    print(f"per subject: mean {sum(per) / len(per):.2f} s, max {max(per):.2f} s")
    print(f"total: {total:.1f} s; output {size / 1e6:.0f} MB; peak RSS {peak_mb:.0f} MB")
    print(f"load average (1/5/15 min): {os.getloadavg()}")
    if args.pet_stats:
        _pet_stats(out, args.pet_stats)
    if args.qc:
        import pandas as pd

        print(pd.DataFrame(_qc_rows(out, args.qc, args.threads)).to_string(index=False))
    if args.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
