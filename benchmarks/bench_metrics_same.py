"""The prepared evaluation path gives the direct formulas' values, on 128^3 heads.

Builds the cases of ``bench_paper_agreement.py`` (the synthetic cohort's head T1 with
its FDG map, and with ``--real-t1`` a real T1 with a pseudo-PET; each fused by the five
classic baselines and a network-like blend), scores every fused image of a case against
ONE :class:`fusion3d.metrics.prepared.SubjectSources` (as the evaluation does) and with
:func:`fusion3d.metrics.protocols.direct_metrics` (one pair at a time, the formulas
before the sources' side was shared), and prints the largest relative difference per
protocol and metric::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics_same.py \\
        [--real-t1 tests/data/real_t1/seg3d_mr_t1.nii.gz]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_paper_agreement import build_cases  # noqa: E402

from fusion3d.metrics import PROTOCOLS  # noqa: E402
from fusion3d.metrics.prepared import SubjectSources, score  # noqa: E402
from fusion3d.metrics.protocols import direct_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-t1", help="a real T1 NIfTI for a second case")
    args = parser.parse_args()
    volumes = {k: v.astype(np.float64) for k, v in build_cases(args.real_t1).items()}
    worst: dict[tuple[str, str], float] = {}
    n_fused = 0
    for case in sorted({k.split("/")[0] for k in volumes}):
        mri, pet = volumes[f"{case}/mri"], volumes[f"{case}/pet"]
        sources = SubjectSources(mri, pet)
        for key, fused in volumes.items():
            if not key.startswith(f"{case}/") or key.endswith(("/mri", "/pet")):
                continue
            n_fused += 1
            for protocol in PROTOCOLS:
                want = direct_metrics(fused, mri, pet, protocol=protocol)
                got = score(fused, sources, protocol)
                for name, value in want.items():
                    rel = abs(got[name] - value) / max(abs(value), 1e-300)
                    worst[(protocol, name)] = max(worst.get((protocol, name), 0.0), rel)
    print(f"{n_fused} fused volumes, cases: {sorted({k.split('/')[0] for k in volumes})}")
    print(f"{'protocol':8s} {'metric':14s} {'max rel diff':>12s}")
    for (protocol, name), rel in worst.items():
        print(f"{protocol:8s} {name:14s} {rel:12.2e}")
    print(f"largest: {max(worst.values()):.2e}")


if __name__ == "__main__":
    main()
