"""Time the three metric protocols on one 128^3 synthetic subject built from MNI152.

The volume imitates the model grid: nilearn's MNI152 2009a T1 (1 mm) masked by its
brain mask, cropped to the brain, zero padded to 224^3, resized to 128^3 and min-max
scaled to [0, 1]. "PET" is a Gaussian-blurred copy (sigma 3 voxels), the "fused"
image a 0.6/0.4 blend. Run single-threaded, as on a shared 2-core machine::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py [--repeat N]

It prints wall-clock and process CPU seconds per protocol (CPU time is the steadier
figure on a loaded machine) and the load average.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from fusion3d.metrics import PROTOCOLS, compute_metrics  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (best is kept)")
    args = parser.parse_args()
    fused, mri, pet = synthetic_subject()
    n_brain = int((mri > 0).any(axis=(0, 1)).sum())
    print(f"volume {mri.shape}, {n_brain} axial slices with brain")
    compute_metrics(fused[..., 60:70], mri[..., 60:70], pet[..., 60:70], protocol="volume")
    total_wall = total_cpu = 0.0
    print(f"{'protocol':8s} {'wall':>7s} {'cpu':>7s}  (best of {max(1, args.repeat)})")
    for protocol in PROTOCOLS:
        best_wall = best_cpu = float("inf")
        for _ in range(max(1, args.repeat)):
            wall, cpu = time.perf_counter(), time.process_time()
            compute_metrics(fused, mri, pet, protocol=protocol)
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        total_wall += best_wall
        total_cpu += best_cpu
        print(f"{protocol:8s} {best_wall:6.2f}s {best_cpu:6.2f}s")
    print(f"{'total':8s} {total_wall:6.2f}s {total_cpu:6.2f}s")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
