"""The fusion3d command line and the cohort_search target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fusion3d import __version__
from fusion3d.cli import main

REPO = Path(__file__).resolve().parents[2]
PAPER_COHORT = REPO / "config" / "cohorts" / "dc2fusion_image_ids.csv"


def test_paper_cohort_ships_with_the_project():
    ids = PAPER_COHORT.read_text().strip().split(",")
    assert len(ids) == 1324 and len(set(ids)) == 1324 and all(i.startswith("I") for i in ids)


def test_cohort_search_prints_batches_ida_accepts(tmp_path, capsys):
    out = tmp_path / "batches.txt"
    assert main(["cohort-search", str(PAPER_COHORT), "--batch-size", "200", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    batches = [line for line in printed.splitlines() if not line.startswith("#")]
    assert len(batches) == 7  # 1,324 IDs in batches of 200
    assert sum(len(b.split(",")) for b in batches) == 1324
    assert out.exists() and "I321357" in out.read_text()


def test_version_and_bad_input_exit_code(tmp_path, capsys):
    assert main(["version"]) == 0 and capsys.readouterr().out.strip() == __version__
    assert main(["cohort-search", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_cohort_search_target_runs_without_a_download(tmp_path):
    import yaml

    config = yaml.safe_load((REPO / "config" / "adni.yaml").read_text())
    config["results"] = "results"
    config["cohort"]["image_ids"] = str(PAPER_COHORT)
    (tmp_path / "adni.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "cohort_search",
            "--cores",
            "1",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "adni.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "results" / "cohort" / "ida_search_batches.txt").read_text()
    assert "I321357" in text
