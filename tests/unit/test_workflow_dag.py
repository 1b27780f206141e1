"""The default study's job graph past the ingest checkpoint: a dry run on a results folder whose
ingest outputs exist (two subjects, empty image files) lists every per-subject job.

A dry run of a fresh study stops at the checkpoint (no pairs.tsv yet, no subject known), so
the rules that come after it are checked here."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fusion3d.io import write_tsv

REPO = Path(__file__).resolve().parents[2]
SUBJECTS = ["sub-ADNI002S0000_ses-M000", "sub-ADNI002S0001_ses-M000"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A working folder whose synthetic cohort and ingest outputs exist (ingest is done)."""
    root = tmp_path_factory.mktemp("dag")
    (root / "results" / "synthetic").mkdir(parents=True)
    (root / "results" / "synthetic" / "cohort.json").write_text("{}")
    time.sleep(0.05)  # the ingest outputs are newer than its input
    (root / "raw").mkdir()
    rows = []
    for i, group in enumerate(("CN", "AD")):
        for kind in ("m", "p"):
            (root / "raw" / f"{kind}{i}.nii.gz").touch()
        rows.append(
            {
                "participant_id": f"sub-ADNI002S{i:04d}",
                "session_id": "ses-M000",
                "ptid": f"002_S_{i:04d}",
                "group": group,
                "mri_path": f"raw/m{i}.nii.gz",
                "pet_path": f"raw/p{i}.nii.gz",
            }
        )
    ingest = root / "results" / "ingest"
    write_tsv(pd.DataFrame(rows), ingest / "pairs.tsv")
    for name in ("excluded", "missing", "header_flags"):
        (ingest / f"{name}.tsv").write_text("x\n")
    (root / "results" / "bids").mkdir()
    return root


def dry_run(workdir: Path, *configfiles: Path) -> tuple[dict[str, int], str]:
    """``snakemake -n`` of the default study in ``workdir``: job counts by rule, and the output."""
    configs = [str(REPO / "config" / "config.yaml"), *map(str, configfiles)]
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile"]
        + [str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", *configs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    stats = out[out.index("Job stats:") :]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}
    return counts, out


def test_the_default_study_probes_the_t1_volumes_of_every_subject(ingested):
    counts, out = dry_run(ingested)
    assert counts["preprocess"] == 2 and counts["probe_volumes"] == 2
    assert counts["probe_features_source"] == 3  # t1, pet, t1vol
    for subject in SUBJECTS:
        assert f"results/probe/volumes/{subject}.tsv" in out
    probe_job = out[out.index("rule probe:") :].split("\n\n")[0]
    assert "results/probe/features/t1vol.tsv" in probe_job


def test_without_t1_volumes_no_volume_job_runs(ingested, tmp_path):
    override = tmp_path / "no_volumes.yaml"
    override.write_text(yaml.safe_dump({"probe": {"t1_volumes": False}}))
    counts, out = dry_run(ingested, override)
    assert "probe_volumes" not in counts and counts["probe_features_source"] == 2
    assert "t1vol" not in out
