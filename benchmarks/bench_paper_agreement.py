"""Agreement of the ``paper`` protocol with the published DC2Fusion evaluation code.

The paper's Table 1 comes from ``evaluation_metrics.py`` of louelin/DC2Fusion, called
by its ``infer_singleImage.py``. This script scores the same axial slices with that
file, unmodified, in a separate Python environment (nothing of it is imported into
this interpreter), and with :mod:`fusion3d.metrics.published`, and prints the largest
absolute and relative difference per metric. It then prints what each candidate for
the paper's "FMI" column gives per fusion method (the paper: 0.795-0.817 for all four
methods)::

    python3.11 -m venv /tmp/pubeval && /tmp/pubeval/bin/pip install torch==2.13.0 \\
        torchmetrics==1.4.1 phasepack==1.5 opencv-python-headless scikit-image \\
        scikit-learn scipy numpy==2.3.5
    .venv/bin/python benchmarks/bench_paper_agreement.py --published-dir PATH/TO/DC2Fusion \\
        --reference-python /tmp/pubeval/bin/python [--real-t1 PATH/TO/T1.nii.gz]

Cases: 128^3 float32 volumes in [0, 1]. "synthetic": the synthetic cohort's head T1 in
MNI space with its FDG uptake map (6 mm blur, smoothed noise); "real" (with
``--real-t1``): a real T1 with a pseudo-PET (a blurred grey-matter-like intensity
band). Each is cropped to the head, padded to a cube and resized to 128^3. Fusions:
the five classic baselines of :func:`fusion3d.baselines.fuse` and a network-like blend
(``0.6 MRI + 0.4 PET``, blurred, noise 0.02). Slices 48, 64 and 80 of the last axis
are scored as ``infer_singleImage.py`` does (``vol[0, 0, :, :, k]`` of float32
tensors, ``metric(fused, source)``); the reference also runs torchmetrics' functional
PSNR and SSIM on float64 tensors (rows ``psnr_f64``, ``ssim_f64``), which isolates the
float32 round-off of the published PSNR and SSIM.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from fusion3d.baselines import fuse
from fusion3d.metrics import published
from fusion3d.metrics.fmi import fmi_haghighat
from fusion3d.metrics.fsim import fsim as fsim_zhang

SLICES = (48, 64, 80)
METHODS = ("average", "maximum", "pca", "wavelet", "laplacian", "netlike")
METRICS = ("psnr", "ssim", "nmi", "mi", "fsim")

#: Run by the reference interpreter: argv = DC2Fusion checkout, input .npz, output .json.
REFERENCE_SCRIPT = r"""
import json, sys, warnings
sys.dont_write_bytecode = True
warnings.simplefilter("ignore")
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from evaluation_metrics import fsim, mutual_information, nmi, psnr, ssim
from torchmetrics.functional import peak_signal_noise_ratio as psnr_fn
from torchmetrics.functional import structural_similarity_index_measure as ssim_fn
data = np.load(sys.argv[2])
out = {}
for key in data.files:
    case, method = key.split("/")
    if method in ("mri", "pet"):
        continue
    fus = torch.from_numpy(data[key])[None, None]
    for src_name in ("mri", "pet"):
        src = torch.from_numpy(data[case + "/" + src_name])[None, None]
        for k in [int(v) for v in sys.argv[3].split(",")]:
            final, gt = fus[0, 0, :, :, k], src[0, 0, :, :, k]
            f4, g4 = final[None, None], gt[None, None]
            out[f"{key}/{k}/{src_name}"] = {
                "psnr": psnr(final, gt), "ssim": ssim(f4, g4), "nmi": float(nmi(final, gt)),
                "mi": float(mutual_information(final, gt)), "fsim": float(fsim(final, gt)),
                "ssim_f64": ssim_fn(f4.double(), g4.double(), data_range=1.0).item(),
                "psnr_f64": psnr_fn(final.double(), gt.double(), data_range=1.0).item(),
            }
json.dump(out, open(sys.argv[4], "w"))
"""


def _to_cube(vol: np.ndarray, size: int = 128) -> tuple[np.ndarray, tuple]:
    """Crop to voxels above 2 % of the maximum, pad to a cube, resize to ``size^3``."""
    nz = np.argwhere(vol > vol.max() * 0.02)
    box = tuple(slice(a, b + 1) for a, b in zip(nz.min(0), nz.max(0), strict=True))
    shape = [s.stop - s.start for s in box]
    side = max(shape)
    pad = [((side - n) // 2, side - n - (side - n) // 2) for n in shape]
    geometry = (box, pad, size / side)
    return _apply(vol, geometry, size), geometry


def _apply(vol: np.ndarray, geometry: tuple, size: int = 128) -> np.ndarray:
    """Apply a crop/pad/resize ``geometry`` of :func:`_to_cube` to another volume."""
    box, pad, zoom = geometry
    out = ndimage.zoom(np.pad(vol[box], pad), zoom, order=1)[:size, :size, :size]
    out = out - out.min()
    return (out / out.max()).astype(np.float32)


def synthetic_case() -> tuple[np.ndarray, np.ndarray]:
    """The synthetic cohort's MNI-space head T1 and FDG uptake (6 mm blur, noise)."""
    from fusion3d.synthetic.anatomy import template_space
    from fusion3d.synthetic.pet import pet_maps

    t1 = template_space().t1.astype(np.float64)
    fdg = ndimage.gaussian_filter(pet_maps().fdg.astype(np.float64), 6.0 / 2.355)
    noise = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(fdg.shape), 1.0)
    fdg = np.clip(fdg + 0.02 * noise, 0, None)
    mri, geometry = _to_cube(t1)
    return mri, _apply(fdg, geometry)


def real_case(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A real T1 and a pseudo-PET: a blurred grey-matter-like band of its intensities."""
    import nibabel as nib

    mri, _ = _to_cube(nib.load(path).get_fdata())
    gm = np.exp(-(((mri - 0.35) / 0.08) ** 2)) * (mri > 0.15)
    wm = 0.3 * np.exp(-(((mri - 0.55) / 0.1) ** 2))
    pet = ndimage.gaussian_filter(gm + wm, 2.5)
    return mri, ((pet - pet.min()) / (pet.max() - pet.min())).astype(np.float32)


def build_cases(real_t1: str | None) -> dict[str, np.ndarray]:
    """``{"<case>/<mri|pet|method>": float32 volume}`` for every case and fusion."""
    pairs = {"synthetic": synthetic_case()}
    if real_t1:
        pairs["real"] = real_case(real_t1)
    volumes: dict[str, np.ndarray] = {}
    for case, (mri, pet) in pairs.items():
        volumes[f"{case}/mri"], volumes[f"{case}/pet"] = mri, pet
        m64, p64 = mri.astype(np.float64), pet.astype(np.float64)
        for method in METHODS[:-1]:
            volumes[f"{case}/{method}"] = fuse(method, m64, p64)
        noise = np.random.default_rng(1).normal(0, 0.02, mri.shape)
        net = ndimage.gaussian_filter(0.6 * m64 + 0.4 * p64, 0.8) + noise
        volumes[f"{case}/netlike"] = np.clip(net, 0, 1).astype(np.float32)
    return volumes


def ours(volumes: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Our published-semantics metrics, keyed as the reference's output."""
    fns = {
        "psnr": published.psnr,
        "ssim": published.ssim,
        "nmi": published.nmi,
        "mi": published.mutual_information,
        "fsim": published.fsim,
    }
    out = {}
    for key, vol in volumes.items():
        case, method = key.split("/")
        if method in ("mri", "pet"):
            continue
        for src_name in ("mri", "pet"):
            src = volumes[f"{case}/{src_name}"]
            for k in SLICES:
                f, s = vol[:, :, k], src[:, :, k]
                out[f"{key}/{k}/{src_name}"] = {m: fn(f, s) for m, fn in fns.items()}
    return out


def reference(volumes, published_dir: str, python: str) -> dict[str, dict[str, float]]:
    """Run the published ``evaluation_metrics.py`` in ``python`` on the same slices."""
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = Path(tmp) / "cases.npz", Path(tmp) / "ref.json"
        np.savez(npz, **volumes)
        slices = ",".join(map(str, SLICES))
        cmd = [python, "-c", REFERENCE_SCRIPT, published_dir, str(npz), slices, str(out)]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def report_agreement(ref: dict, got: dict) -> None:
    """Print the largest absolute and relative difference per metric."""
    print(f"{'metric':8s} {'n':>4s} {'max |diff|':>11s} {'max rel':>10s}  values")
    rows = [(m, m) for m in METRICS] + [("psnr", "psnr_f64"), ("ssim", "ssim_f64")]
    for name, ref_name in rows:
        diff = np.array([abs(ref[k][ref_name] - got[k][name]) for k in got])
        vals = np.array([ref[k][ref_name] for k in got])
        label = ref_name
        print(
            f"{label:8s} {len(diff):4d} {diff.max():11.3e} {(diff / np.abs(vals)).max():10.3e}"
            f"  {vals.min():.4f}..{vals.max():.4f}"
        )


def report_ssim_versions(volumes: dict[str, np.ndarray]) -> None:
    """How far torchmetrics >= 1.4.2 (whole reflect-padded map averaged) is from <= 1.4.1."""
    rel = []
    for key, vol in volumes.items():
        case, method = key.split("/")
        if method in ("mri", "pet"):
            continue
        for src in (volumes[f"{case}/mri"], volumes[f"{case}/pet"]):
            for k in SLICES:
                f, s = vol[:, :, k], src[:, :, k]
                pad = [np.pad(x, published.SSIM_RADIUS, mode="reflect") for x in (f, s)]
                rel.append(published.ssim_map(*pad).mean() / published.ssim(f, s) - 1)
    print(
        f"\nSSIM averaged over the whole map (torchmetrics >= 1.4.2) vs cropped (<= 1.4.1): "
        f"{100 * min(rel):+.1f} % .. {100 * max(rel):+.1f} %"
    )


def report_fmi_candidates(volumes: dict[str, np.ndarray]) -> None:
    """Mean over sources and slices of each "FMI" candidate, per case and method."""
    cands = {
        "fsim": published.fsim,
        "fsim_zhang": fsim_zhang,
        "fmi_haghighat": fmi_haghighat,
        "mi": published.mutual_information,
    }
    print("\ncandidates for the paper's FMI (paper: 0.795..0.817 for all four methods)")
    print(f"{'case/method':20s}" + "".join(f"{c:>15s}" for c in cands))
    for key, vol in volumes.items():
        case, method = key.split("/")
        if method in ("mri", "pet"):
            continue
        srcs = [volumes[f"{case}/{s}"] for s in ("mri", "pet")]
        vals = [
            np.mean([fn(vol[:, :, k], s[:, :, k]) for s in srcs for k in SLICES])
            for fn in cands.values()
        ]
        print(f"{key:20s}" + "".join(f"{v:15.3f}" for v in vals))


def main() -> None:
    """Parse the arguments, build the cases, score them both ways and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published-dir", required=True, help="DC2Fusion checkout")
    parser.add_argument("--reference-python", required=True, help="its environment's python")
    parser.add_argument("--real-t1", help="a real T1 NIfTI for a second case")
    args = parser.parse_args()
    if not (Path(args.published_dir) / "evaluation_metrics.py").is_file():
        sys.exit(f"--published-dir: no evaluation_metrics.py in {args.published_dir}")
    volumes = build_cases(args.real_t1)
    ref = reference(volumes, args.published_dir, args.reference_python)
    report_agreement(ref, ours(volumes))
    report_ssim_versions(volumes)
    report_fmi_candidates(volumes)


if __name__ == "__main__":
    main()
