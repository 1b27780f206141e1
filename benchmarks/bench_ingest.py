"""Time the metadata-only part of ingest on a placeholder download of the paper's size.

Builds 660 subjects / 1,320 images (the real IDA naming, tiny placeholder files, about 100k
files: T1 as a 166-file DICOM series for half the subjects and one NIfTI for the others, FDG as
a 96-file DICOM series) in a temporary folder, using the image IDs of
``config/cohorts/dc2fusion_image_ids.csv`` when present, then times ``read_manifests``, the
download walk, ``plan_ingest`` (classification, location, pairing) and ``check_completeness``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ingest.py [--subjects 660]``
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import tempfile
import time
from pathlib import Path

from fusion3d.ingest import plan_ingest, read_manifests
from fusion3d.ingest.cohort import check_completeness, read_cohort
from fusion3d.ingest.locate import scan_download
from fusion3d.ingest.manifest import IDA_HEADER

ROOT = Path(__file__).resolve().parents[1]
COHORT = ROOT / "config" / "cohorts" / "dc2fusion_image_ids.csv"
T1 = "MPR; GradWarp; B1 Correction; N3; Scaled"
FDG = "Coreg, Avg, Std Img and Vox Siz, Uniform Resolution"
HEADER = IDA_HEADER


def _folder(desc: str) -> str:
    return desc.replace(" ", "_").replace(";", "_")


def build(download: Path, n_subjects: int) -> tuple[Path, list[str]]:
    """Write the placeholder download; return the manifest path and the image IDs."""
    ids = read_cohort(COHORT)[: 2 * n_subjects] if COHORT.exists() else []
    ids += [f"I{9_000_000 + i}" for i in range(2 * n_subjects - len(ids))]
    rows = []
    for s in range(n_subjects):
        ptid = f"{100 + s % 900:03d}_S_{1000 + s:04d}"
        t1_id, pet_id = ids[2 * s], ids[2 * s + 1]
        day = dt.date(2010, 1, 1) + dt.timedelta(days=s)
        for kind, image_id, desc, n_files, ext in (
            ("MR", t1_id, T1, 166 if s % 2 else 1, "dcm" if s % 2 else "nii"),
            ("PT", pet_id, FDG, 96, "dcm"),
        ):
            leaf = download / "ADNI" / ptid / _folder(desc) / f"{day}_10_24_06.0" / image_id
            leaf.mkdir(parents=True)
            for k in range(n_files):
                name = (
                    f"ADNI_{ptid}_{kind}_{_folder(desc)}_Br_20120203154609620_{k + 1}"
                    f"_S{100000 + s}_{image_id}.{ext}"
                )
                (leaf / name).write_bytes(b"\0")
            rows.append(
                {
                    "Image Data ID": image_id,
                    "Subject": ptid,
                    "Group": "CN",
                    "Sex": "F",
                    "Age": "70",
                    "Visit": "1",
                    "Modality": "MRI" if kind == "MR" else "PET",
                    "Description": desc,
                    "Type": "Processed",
                    "Acq Date": f"{day.month}/{day.day}/{day.year}",
                    "Format": "DCM" if ext == "dcm" else "NiFTI",
                    "Downloaded": "",
                }
            )
    manifest = download / "COLLECTION_1_1_2025.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, HEADER, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    return manifest, ids


def main() -> None:
    """Build, time and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=660)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        download = Path(tmp)
        t0 = time.perf_counter()
        manifest_path, ids = build(download, args.subjects)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        manifest = read_manifests([manifest_path])
        t_manifest = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = scan_download(download)
        t_scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        missing, summary = check_completeness(ids, manifest, download, index=index)
        t_complete = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan = plan_ingest(download_dir=download, manifest=manifest, index=index, cohort_ids=ids)
        t_plan = time.perf_counter() - t0
        n_pairs = sum(len(p) for p in plan.pairs.values())
        print(
            f"download: {args.subjects} subjects, {len(manifest)} images, "
            f"{index.n_files} files (built in {t_build:.1f} s)"
        )
        print(f"read_manifests      {t_manifest:7.3f} s")
        print(f"scan_download       {t_scan:7.3f} s")
        print(
            f"check_completeness  {t_complete:7.3f} s  ({summary['n_found']} found, "
            f"{len(missing)} missing)"
        )
        print(
            f"plan_ingest         {t_plan:7.3f} s  ({n_pairs} pairs, {len(plan.excluded)} excluded)"
        )
        print(f"total (no build)    {t_manifest + t_scan + t_complete + t_plan:7.3f} s")


if __name__ == "__main__":
    main()
