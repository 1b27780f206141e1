"""Benchmark the synthetic cohort generator: per-subject time and total, on one core.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_synthetic.py [--n-subjects 16] [--out DIR]

Target (docs): 16 subjects with quirks in <= 90 s on one core.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


def main() -> None:
    """Run the generator once and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subjects", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-quirks", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the cohort here (default: a temp dir)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from fusion3d.synthetic import cohort, generate_cohort
    from fusion3d.synthetic.anatomy import template_space
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
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synthetic_"))
    t_start = time.perf_counter()
    template_space()
    pet_maps()
    t_setup = time.perf_counter() - t_start
    print(f"template head + uptake maps: {t_setup:.2f} s", flush=True)
    summary = generate_cohort(
        out, n_subjects=args.n_subjects, seed=args.seed, quirks=not args.no_quirks
    )
    total = time.perf_counter() - t_start
    per = [t for _, t in timings]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"subjects rendered: {len(per)} (incl. extra), images: {len(summary)}")
    print(f"per subject: mean {sum(per) / len(per):.2f} s, max {max(per):.2f} s")
    print(
        f"total: {total:.1f} s (target <= 90 s); output {size / 1e6:.0f} MB; peak RSS {peak_mb:.0f} MB"
    )
    if args.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
