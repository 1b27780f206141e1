"""Time the three metric protocols on one 128^3 synthetic subject built from MNI152.

The volume imitates the model grid: nilearn's MNI152 2009a T1 (1 mm) masked by its
brain mask, cropped to the brain, zero padded to 224^3, resized to 128^3 and min-max
scaled to [0, 1]. "PET" is a Gaussian-blurred copy (sigma 3 voxels), the "fused"
image a 0.6/0.4 blend. Run single-threaded, as on a shared 2-core machine::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py [--repeat N]

Per protocol it prints three costs (wall clock and process CPU seconds; CPU time is the
steadier figure on a loaded machine): ``direct`` (the formulas one (fused, source) pair
at a time, :func:`fusion3d.metrics.protocols.direct_metrics`, what the evaluation cost
before the sources' side was shared), ``first`` (a subject's first fused image: its
sources prepared, :class:`fusion3d.metrics.prepared.SubjectSources`, then scored) and
``further`` (each further fused image of the subject: only its own side). Then the
projected CPU hours of the evaluation stage of a study of ``--subjects`` subjects and
``--fused`` fused images a subject (methods x seeds; default 660 x 10 x 3), with the
sources prepared once per subject (one pass over a subject's fused images) and once per
fused image (one job per method), and the load average.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from fusion3d.metrics import PROTOCOLS  # noqa: E402
from fusion3d.metrics.prepared import SubjectSources, score  # noqa: E402
from fusion3d.metrics.protocols import direct_metrics  # noqa: E402


def synthetic_subject(size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(fused, mri, pet)`` float64 volumes of shape ``(size,) * 3`` in [0, 1]."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1).get_fdata()
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0
    t1 = np.where(brain, t1, 0.0)
    box = tuple(slice(ix.min(), ix.max() + 1) for ix in np.nonzero(t1 > 0))
    t1 = t1[box]
    pad = [((224 - n) // 2, 224 - n - (224 - n) // 2) for n in t1.shape]
    t1 = np.pad(t1, pad)
    mri = ndimage.zoom(t1, size / 224, order=1)
    mri = np.clip(mri, 0, None)
    mri = (mri - mri.min()) / (mri.max() - mri.min())
    pet = ndimage.gaussian_filter(mri, 3.0)
    pet = (pet - pet.min()) / (pet.max() - pet.min())
    fused = 0.6 * mri + 0.4 * pet
    return fused, mri, pet


def _best(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and CPU seconds of ``repeat`` calls of ``fn``."""
    best_wall = best_cpu = float("inf")
    for _ in range(max(1, repeat)):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def _time_protocols(fused, mri, pet, repeat: int) -> dict[str, dict[str, tuple[float, float]]]:
    """``{protocol: {"direct" | "first" | "further": (wall, cpu)}}``."""
    out = {}
    for protocol in PROTOCOLS:
        holder = {}

        def first(protocol=protocol, holder=holder):
            holder["sources"] = SubjectSources(mri, pet)
            score(fused, holder["sources"], protocol)

        out[protocol] = {
            "direct": _best(lambda p=protocol: direct_metrics(fused, mri, pet, protocol=p), repeat),
            "first": _best(first, repeat),
            "further": _best(lambda p=protocol, h=holder: score(fused, h["sources"], p), repeat),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (best is kept)")
    parser.add_argument("--subjects", type=int, default=660, help="subjects of the projection")
    parser.add_argument("--fused", type=int, default=30, help="fused images a subject")
    args = parser.parse_args()
    fused, mri, pet = synthetic_subject()
    n_brain = int((mri > 0).any(axis=(0, 1)).sum())
    print(f"volume {mri.shape}, {n_brain} axial slices with brain")
    direct_metrics(fused[..., 60:70], mri[..., 60:70], pet[..., 60:70], protocol="volume")
    times = _time_protocols(fused, mri, pet, args.repeat)
    kinds = ("direct", "first", "further")
    print(f"{'protocol':8s}" + "".join(f" {k + ' wall':>13s} {k + ' cpu':>12s}" for k in kinds))
    total = {k: [0.0, 0.0] for k in kinds}
    for protocol, row in times.items():
        print(f"{protocol:8s}" + "".join(f" {row[k][0]:12.3f}s {row[k][1]:11.3f}s" for k in kinds))
        for k in kinds:
            total[k][0] += row[k][0]
            total[k][1] += row[k][1]
    print(f"{'total':8s}" + "".join(f" {total[k][0]:12.3f}s {total[k][1]:11.3f}s" for k in kinds))
    n, m = args.subjects, args.fused
    hours = {
        "direct (before)": n * m * total["direct"][1] / 3600,
        "sources once per fused image (a job per method)": n * m * total["first"][1] / 3600,
        "sources once per subject (one pass)": n
        * (total["first"][1] + (m - 1) * total["further"][1])
        / 3600,
    }
    print(f"projected evaluation CPU hours, {n} subjects x {m} fused images (CPU time):")
    for name, value in hours.items():
        print(f"  {name:50s} {value:6.1f} h")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
