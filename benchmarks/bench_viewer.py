"""Size and time of the viewer pages and of what ``snakemake --report`` embeds, projected to a study.

Builds one subject's model-grid volumes at each ``--grid`` from nilearn's MNI152 2009a (the brain
as the preprocessing leaves it: skull-stripped, cropped, padded to a cube, min-max scaled; noise
of ``--t1-noise`` / ``--pet-noise`` of the maximum inside the brain, so the sprites compress like a
scanner's image and not like the smooth template), the five classic fusions of
``fusion3d.baselines`` and, per network and seed, a network-like fusion (the average, blurred,
with its own noise and a faint 4-voxel patch pattern). The QC figure is the preprocessing's own
(``fusion3d.preprocess.qc.qc_figure`` at 1 mm) and the QC montage page the figures rule's own.
Pages are written by the real viewer code (``fusion3d.report.viewer.write_subject_page``):

- ``first``: T1, PET and every method, a network's first seed only (what a page shows);
- ``seeds``: T1, PET and every method, a network once per seed;
- ``sources``: T1 and PET only (a page of a subject outside ``viewer.fused_splits``).

The report embeds a file as a base64 data URI (``snakemake.report.common.data_uri_from_file``,
measured here on each page). The projection counts pages and embedded files for ``--subjects``
with the split fractions of ``config/adni.yaml`` and ``--figure-subjects``, with the old
behaviour (fused volumes on every page, the report embedding every page) and with the chosen
one (``fusion3d.report.viewer.report_subjects`` and ``viewer.fused_splits``).

``--report-html`` breaks a report that ``snakemake --report`` wrote down instead: its size, and
the embedded files by kind (viewer pages, QC figures, the rest).

Usage: ``python benchmarks/bench_viewer.py [--grid 64 128] [--subjects 660] [--seeds 3]``;
``python benchmarks/bench_viewer.py --report-html results/report.html``
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from snakemake.report.common import data_uri_from_file

from fusion3d.baselines import fuse
from fusion3d.methods import BY_NAME, CLASSIC_METHODS, NETWORK_METHODS
from fusion3d.preprocess.geometry import mni_template, to_model_grid
from fusion3d.preprocess.qc import qc_figure
from fusion3d.report.figures import plot_qc_montage_pages
from fusion3d.report.viewer import report_subjects, write_subject_page

MB = 1e6


def mni_subject(t1_noise: float, pet_noise: float, seed: int = 0) -> dict[str, np.ndarray]:
    """A skull-stripped T1, a PET-like volume, the mask and the template on the 1 mm MNI grid."""
    rng = np.random.default_rng(seed)
    template = mni_template(1.0, "t1")
    mask = np.asarray(mni_template(1.0, "mask").dataobj) > 0
    t1 = np.asarray(template.dataobj, dtype=np.float32) * mask
    t1 = t1 + rng.normal(0, t1_noise * t1.max(), t1.shape).astype(np.float32) * mask
    gm = np.asarray(mni_template(1.0, "gm").dataobj)
    wm = np.asarray(mni_template(1.0, "wm").dataobj)
    pet = ndimage.gaussian_filter((gm + 0.3 * wm).astype(np.float32), 3) * mask
    pet = pet + rng.normal(0, pet_noise * pet.max(), pet.shape).astype(np.float32) * mask
    return {
        "t1": np.clip(t1, 0, None),
        "pet": np.clip(pet, 0, None),
        "mask": mask.astype(np.uint8),
        "template": np.asarray(template.dataobj, dtype=np.float32),
        "affine": template.affine,
    }


def network_like(mri: np.ndarray, pet: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A network-like fusion: the average, blurred, with noise and a faint 4-voxel pattern."""
    out = ndimage.gaussian_filter(0.5 * mri + 0.5 * pet, 0.7)
    out += rng.normal(0, 0.02, out.shape).astype(np.float32) * (out > 0.02)
    index = np.indices(out.shape).sum(axis=0) % 4
    out += 0.01 * (index == 0) * (out > 0.02)
    return np.clip(out, 0, 1).astype(np.float32)


def write_volumes(subject: dict, grid: int, seeds: int, out: Path) -> dict[str, Path]:
    """The model-grid T1, PET and every fused volume as NIfTIs (keys: t1, pet, method[/seed])."""
    model = to_model_grid(subject["t1"], subject["pet"], subject["mask"], subject["affine"], grid)
    (mri, affine), (pet, _) = model["mri"], model["pet"]
    volumes = {"t1": mri, "pet": pet}
    for method in CLASSIC_METHODS:
        volumes[method] = np.clip(fuse(method, mri, pet), 0, 1).astype(np.float32)
    rng = np.random.default_rng(grid)
    for method in NETWORK_METHODS:
        for seed in range(seeds):
            volumes[f"{method}/seed-{seed}"] = network_like(mri, pet, rng)
    paths = {}
    for key, data in volumes.items():
        paths[key] = out / f"{key.replace('/', '_')}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), paths[key])
    return paths


def qc_files(subject: dict, out: Path) -> dict[str, Path]:
    """The preprocessing's QC figure of the subject, its qc.json and one QC montage page."""
    png = qc_figure(
        subject["t1"], subject["mask"], subject["pet"], subject["template"], out / "qc.png",
        "sub-BENCH", voxel_mm=1.0,
    )  # fmt: skip
    record = {"subject_id": "sub-BENCH", "mask_volume_ml": float(subject["mask"].sum()) / 1000}
    (out / "qc.json").write_text(json.dumps(record))
    montage = plot_qc_montage_pages([png] * 48, out / "montage", out / "montage.pdf")
    return {"png": png, "json": out / "qc.json", "montage": montage[0]}


def page_variants(paths: dict[str, Path], qc: dict[str, Path], seeds: int, out: Path) -> dict:
    """Write the three pages (first, seeds, sources); their size, embedded size and time."""
    first = {m: paths[m] for m in CLASSIC_METHODS}
    first |= {m: paths[f"{m}/seed-0"] for m in NETWORK_METHODS}
    every = {m: paths[m] for m in CLASSIC_METHODS}
    every |= {
        f"{m}/seed-{s}": paths[f"{m}/seed-{s}"] for m in NETWORK_METHODS for s in range(seeds)
    }
    labels_every = {
        k: f"{BY_NAME[k.split('/')[0]].label} {k[len(k.split('/')[0]) :]}" for k in every
    }
    variants = {
        "first": (first, {m: BY_NAME[m].label for m in first}),
        "seeds": (every, labels_every),
        "sources": ({}, {m: BY_NAME[m].label for m in first}),
    }
    rows = {}
    for name, (fused, labels) in variants.items():
        start = time.perf_counter()
        page = write_subject_page(
            out / f"{name}.html", subject_id="sub-BENCH", t1=paths["t1"], pet=paths["pet"],
            fused=fused, labels=labels, info={"group": "CN", "split": "test"},
            qc_json=qc["json"], qc_png=qc["png"], flags=[], metrics=pd.DataFrame(),
        )  # fmt: skip
        seconds = time.perf_counter() - start
        rows[name] = {
            "volumes": 2 + len(fused),
            "page_mb": page.stat().st_size / MB,
            "embedded_mb": len(data_uri_from_file(page)) / MB,
            "seconds": seconds,
        }
    return rows


def study_split(n: int) -> pd.DataFrame:
    """A split table of ``n`` subjects with config/adni.yaml's fractions (0.8 / 0.1 / 0.1)."""
    n_test = n_val = round(0.1 * n)
    names = ["train"] * (n - n_test - n_val) + ["val"] * n_val + ["test"] * n_test
    return pd.DataFrame({"subject_id": [f"sub-{i:04d}" for i in range(n)], "split": names})


def project(rows: dict, qc: dict[str, Path], args: argparse.Namespace) -> dict[str, dict]:
    """Pages on disk and the report's viewer and QC share for the whole study, before and after."""
    split = study_split(args.subjects)
    test = split.loc[split["split"] == "test", "subject_id"]
    figures = list(test[: args.figure_subjects])
    qc_mb = len(data_uri_from_file(qc["png"])) / MB
    montage_mb = len(data_uri_from_file(qc["montage"])) / MB * -(-args.subjects // 48)
    out = {}
    for name, page in (("first", rows["first"]), ("seeds", rows["seeds"])):
        n_report = len(report_subjects(split, args.report, figures))
        n_fused = int(split["split"].isin(args.fused_splits).sum())
        src = rows["sources"]
        out[name] = {
            "pages_before_gb": args.subjects * page["page_mb"] / 1e3,
            "report_viewer_before_mb": args.subjects * page["embedded_mb"],
            "pages_after_gb": (
                n_fused * page["page_mb"] + (args.subjects - n_fused) * src["page_mb"]
            )
            / 1e3,
            "report_viewer_after_mb": n_report * page["embedded_mb"],
            "report_qc_subject_pngs_mb": args.subjects * qc_mb,
            "report_qc_montage_mb": montage_mb,
            "cpu_hours_before": args.subjects * page["seconds"] / 3600,
            "cpu_hours_after": (
                n_fused * page["seconds"] + (args.subjects - n_fused) * src["seconds"]
            )
            / 3600,
        }
    return out


def report_breakdown(path: Path) -> dict[str, float]:
    """MB of a report file, and of its embedded files by kind (``;filename=NAME;base64,``)."""
    text = path.read_text(encoding="utf-8")
    out = {"report": len(text) / MB, "viewer pages": 0.0, "QC": 0.0, "other files": 0.0}
    counts = {"viewer pages": 0, "QC": 0, "other files": 0}
    for name, data in re.findall(r";filename=([^;]+);base64,([A-Za-z0-9+/=]+)", text):
        kind = "viewer pages" if name.endswith(".html") else "other files"
        kind = "QC" if "qc" in name.lower() or name.startswith("page-") else kind
        out[kind] += len(data) / MB
        counts[kind] += 1
    out["the report's own code and text"] = out["report"] - sum(
        out[k] for k in ("viewer pages", "QC", "other files")
    )
    return out | {f"{k}, files": float(n) for k, n in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--subjects", type=int, default=660)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--figure-subjects", type=int, default=3)
    parser.add_argument("--fused-splits", nargs="+", default=["test"])
    parser.add_argument("--report", default="figures")
    parser.add_argument("--t1-noise", type=float, default=0.03)
    parser.add_argument("--pet-noise", type=float, default=0.05)
    parser.add_argument("--report-html", type=Path, help="break this report down and stop")
    args = parser.parse_args()
    if args.report_html:
        breakdown = report_breakdown(args.report_html)
        print(
            ", ".join(
                f"{k} {v:.0f}" if k.endswith(", files") else f"{k} {v:.2f} MB"
                for k, v in breakdown.items()
            )
        )
        return
    subject = mni_subject(args.t1_noise, args.pet_noise)
    with tempfile.TemporaryDirectory() as tmp:
        qc = qc_files(subject, Path(tmp))
        print(f"QC figure {qc['png'].stat().st_size / MB:.3f} MB, montage page (48 subjects) "
              f"{qc['montage'].stat().st_size / MB:.3f} MB")  # fmt: skip
        for grid in args.grid:
            folder = Path(tmp) / f"grid-{grid}"
            folder.mkdir()
            paths = write_volumes(subject, grid, args.seeds, folder)
            rows = page_variants(paths, qc, args.seeds, folder)
            for name, row in rows.items():
                print(f"{grid}^3 page {name}: {row['volumes']} volumes, {row['page_mb']:.2f} MB, "
                      f"embedded {row['embedded_mb']:.2f} MB, {row['seconds']:.1f} s")  # fmt: skip
            for name, row in project(rows, qc, args).items():
                figures = ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                print(f"{grid}^3 {args.subjects} subjects, pages '{name}': {figures}")


if __name__ == "__main__":
    main()
