"""Time the metadata of a 660-subject download and Snakemake's DAG for the paper-scale study.

Builds a placeholder LONI IDA download (the real naming, 660 subjects / 1,320 images, one tiny file per
DICOM slice) with ``bench_ingest.build``, then measures:

1. ``plan_ingest`` (read the collection CSV, walk the tree, completeness check, choose and pair;
   everything ingest does except converting images);
2. ``snakemake -n --configfile config/adni.yaml`` pointed at that download, once before ingest (the DAG
   up to the ingest checkpoint) and once after (a placeholder ``pairs.tsv`` of 660 subjects in place, so
   the DAG holds every per-subject job: about 4,000 jobs).

Usage: ``python benchmarks/bench_dag.py [--subjects 660]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import build  # noqa: E402

from fusion3d.ingest import plan_ingest, read_manifests  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def dry_run(workdir: Path, config: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--quiet",
            "rules",
            "--cores",
            "8",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(config),
        ],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
    total = [line for line in result.stdout.splitlines() if line.startswith("total")]
    return elapsed, total[0].split()[-1] if total else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=660)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_dag_") as tmp:
        workdir = Path(tmp)
        download = workdir / "data" / "adni"
        download.mkdir(parents=True)
        manifest_path, ids = build(download, args.subjects)
        cohort = workdir / "cohort_ids.csv"
        cohort.write_text(",".join(ids) + "\n")

        t0 = time.perf_counter()
        plan = plan_ingest(
            download_dir=download, manifest=read_manifests([manifest_path]), cohort_ids=ids
        )
        t_plan = time.perf_counter() - t0
        n_pairs = sum(len(p) for p in plan.pairs.values())

        config = yaml.safe_load((REPO / "config" / "adni.yaml").read_text())
        config["results"] = "results"
        config["cohort"].update(
            download_dir=str(download),
            manifests=[str(manifest_path)],
            adnimerge=None,
            image_ids=str(cohort),
        )
        config_path = workdir / "adni_bench.yaml"
        config_path.write_text(yaml.safe_dump(config))
        t_before, jobs_before = dry_run(workdir, config_path)

        # The ingest checkpoint's outputs, as if it had run: one pair per subject.
        manifest = pd.read_csv(manifest_path)
        ingest = workdir / "results" / "ingest"
        ingest.mkdir(parents=True)
        rows = []
        for ptid, _part in manifest.groupby("Subject"):
            sub = "sub-ADNI" + ptid.replace("_", "")
            paths = {}
            for modality, suffix in (("MRI", "anat/T1w"), ("PET", "pet/trc-18FFDG_pet")):
                folder, name = suffix.split("/")
                path = (
                    workdir
                    / "results"
                    / "bids"
                    / sub
                    / "ses-M000"
                    / folder
                    / f"{sub}_ses-M000_{name}.nii.gz"
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\0")
                paths[modality] = str(path.relative_to(workdir))
            rows.append(
                {
                    "participant_id": sub,
                    "session_id": "ses-M000",
                    "ptid": ptid,
                    "group": "CN",
                    "mri_path": paths["MRI"],
                    "pet_path": paths["PET"],
                }
            )
        time.sleep(1.0)
        for name in ("excluded.tsv", "missing.tsv"):
            (ingest / name).write_text("image_id\treason\n")
        pd.DataFrame(rows).to_csv(ingest / "pairs.tsv", sep="\t", index=False)
        t_after, jobs_after = dry_run(workdir, config_path)

        print(f"placeholder download: {args.subjects} subjects, {len(manifest)} images")
        print(f"plan_ingest (metadata, no conversion)   {t_plan:6.2f} s  ({n_pairs} pairs)")
        print(f"snakemake -n before ingest              {t_before:6.2f} s  ({jobs_before} jobs)")
        print(f"snakemake -n after ingest (full DAG)    {t_after:6.2f} s  ({jobs_after} jobs)")
        print(
            f"metadata + full DAG                     {t_plan + t_after:6.2f} s  (target <= 30 s)"
        )


if __name__ == "__main__":
    main()
