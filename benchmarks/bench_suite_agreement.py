"""Agreement of the ``suite2d`` metrics with MMIF-CDDFuse's ``utils/Evaluator.py``.

The 2D fusion literature reports its metric suite with that evaluator. This script
scores real 8-bit image pairs with it and with :mod:`fusion3d.metrics.suite`, and
prints the largest relative difference per metric. It needs a checkout of the
MMIF-CDDFuse repository and a separate Python environment that can import its
evaluator (numpy, scipy, scikit-image, scikit-learn, opencv); nothing of it is
imported into this interpreter::

    python3.11 -m venv /tmp/cdd && /tmp/cdd/bin/pip install "numpy<2" "scipy<1.12" \\
        scikit-image==0.20.0 "scikit-learn<1.4" opencv-python-headless
    .venv/bin/python benchmarks/bench_suite_agreement.py --evaluator-dir PATH/TO/CDDFuse \\
        --reference-python /tmp/cdd/bin/python [--datasets MRI_PET MRI_CT MRI_SPECT]

For every pair of ``test_img/<dataset>/`` (read as the evaluator's ``test_MIF.py``
reads them: ``image_read_cv2(path, 'GRAY')``, float32 grey values rounded to
integers) three fused images are built: the rounded average, the maximum, and a
darkened noisy average (``round(0.6 avg + N(0, 4^2))`` clipped to 0..255). The
evaluator scores them as ``test_MIF.py`` feeds it (float32), and again in float64
(which isolates its float32 round-off). SSIM is its ``Evaluator.SSIM`` on uint8
copies (data range 255, our convention; its float32 call has no data range that
works in every scikit-image version). Ours: :func:`fusion3d.metrics.compute_metrics`
with ``protocol="suite2d"`` on the 2D float64 images, and again on the images
divided by 255 (the [0, 1] path must give the same values).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from fusion3d.metrics import SUITE_NAMES, compute_metrics

#: Run by the reference interpreter: argv = evaluator dir, output .npz, datasets (comma).
REFERENCE_SCRIPT = r"""
import os, sys
sys.dont_write_bytecode = True
import numpy as np
root, out, datasets = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sys.path.insert(0, root)
from utils.Evaluator import Evaluator as E, image_read_cv2

def fusions(a, b, rng):
    avg = np.round((a + b) / 2)
    dark = np.clip(np.round(0.6 * avg + rng.normal(0, 4, a.shape)), 0, 255)
    return {"average": avg, "maximum": np.maximum(a, b), "dark_noisy": dark}

def scores(f, a, b):
    u8 = [x.astype(np.uint8) for x in (f, a, b)]
    return [E.EN(f), E.SD(f), E.SF(f), E.AG(f), E.MI(f, a, b), E.SCD(f, a, b),
            E.VIFF(f, a, b), E.Qabf(f, a, b), E.SSIM(*u8), E.PSNR(f, a, b)]

rng = np.random.default_rng(0)
keys, images, ref32, ref64 = [], [], [], []
for ds in datasets:
    mod_a, mod_b = ds.split("_")
    folder = os.path.join(root, "test_img", ds)
    for name in sorted(os.listdir(os.path.join(folder, mod_a))):
        a = image_read_cv2(os.path.join(folder, mod_a, name), "GRAY")
        b = image_read_cv2(os.path.join(folder, mod_b, name), "GRAY")
        for fname, f in fusions(a, b, rng).items():
            f = f.astype(np.float32)
            keys.append(f"{ds}/{name}/{fname}")
            images.append(np.stack([f, a, b]))
            ref32.append(scores(f, a, b))
            ref64.append(scores(*(x.astype(np.float64) for x in (f, a, b))))
np.savez(out, keys=np.array(keys), images=np.stack(images), ref32=np.array(ref32),
         ref64=np.array(ref64))
"""


def run_reference(python: str, evaluator_dir: Path, datasets: list[str], out: Path) -> dict:
    """Score the fusions with the evaluator in the reference interpreter; load its results."""
    cmd = [python, "-c", REFERENCE_SCRIPT, str(evaluator_dir), str(out), ",".join(datasets)]
    subprocess.run(cmd, check=True)
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def our_scores(images: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``suite2d`` scores of each (F, A, B) image triple, metric order of SUITE_NAMES."""
    rows = []
    for f, a, b in images.astype(np.float64) / scale:
        out = compute_metrics(f, a, b, protocol="suite2d")
        rows.append([out[name] for name in SUITE_NAMES])
    return np.array(rows)


def max_rel(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Largest ``|ours - ref| / |ref|`` per metric (column)."""
    return (np.abs(ours - ref) / np.abs(ref)).max(axis=0)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, score both ways and print the agreement table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluator-dir", type=Path, required=True)
    parser.add_argument("--reference-python", required=True)
    parser.add_argument("--datasets", nargs="+", default=["MRI_PET"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ref = run_reference(
            args.reference_python, args.evaluator_dir, args.datasets, Path(tmp) / "ref.npz"
        )
    ours = our_scores(ref["images"])
    ours_unit = our_scores(ref["images"], 255.0)
    if not np.isfinite(ref["ref32"]).all():
        print("warning: the evaluator gave non-finite values", file=sys.stderr)
    table = {
        "vs evaluator (float32 input, as test_MIF.py)": max_rel(ours, ref["ref32"]),
        "vs evaluator (float64 input)": max_rel(ours, ref["ref64"]),
        "[0, 1] input vs 8-bit input (ours)": max_rel(ours_unit, ours),
    }
    print(
        f"{len(ours)} fused images ({', '.join(args.datasets)}; average, maximum, "
        "dark_noisy); max relative difference per metric:"
    )
    print(f"{'':46s}" + "".join(f"{n:>10s}" for n in SUITE_NAMES))
    for label, row in table.items():
        print(f"{label:46s}" + "".join(f"{v:10.1e}" for v in row))
    means = {n: float(v) for n, v in zip(SUITE_NAMES, ours.mean(axis=0), strict=True)}
    print("mean of ours:", json.dumps({k: round(v, 4) for k, v in means.items()}))


if __name__ == "__main__":
    main()
