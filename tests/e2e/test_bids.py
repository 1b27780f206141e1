"""BIDS in, BIDS out: the tiny study from a Clinica-layout BIDS dataset, and the validator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TINY_CONFIG, snakemake_env
from fixtures_bids import write_clinica_bids  # noqa: E402

pytestmark = pytest.mark.slow
VALIDATOR = Path(sys.executable).parent / "bids-validator-deno"


def validator_errors(dataset: Path) -> list[tuple]:
    """(code, key, file) of every error of the official BIDS validator on ``dataset``."""
    result = subprocess.run(
        [str(VALIDATOR), "--format", "json", str(dataset)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.stdout.strip(), f"validator printed nothing: {result.stderr[-2000:]}"
    issues = json.loads(result.stdout)["issues"]["issues"]
    return [
        (i["code"], i.get("subCode"), i.get("location")) for i in issues if i["severity"] == "error"
    ]


@pytest.fixture(scope="module")
def bids_study(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny study's synthetic cohort written as Clinica's adni-to-bids output, then the
    whole tiny study run from it (cohort.source: bids). Returns (workdir, dataset)."""
    from fusion3d.synthetic import generate_cohort

    root = tmp_path_factory.mktemp("bids_study")
    tiny = yaml.safe_load(TINY_CONFIG.read_text())
    syn = tiny["cohort"]["synthetic"]
    generate_cohort(root / "synthetic", n_subjects=syn["n_subjects"], seed=syn["seed"])
    download = root / "synthetic" / "download"
    manifests = sorted(
        p for p in download.glob("*.csv") if p.name not in ("ADNIMERGE.csv", "cohort_image_ids.csv")
    )
    dataset = write_clinica_bids(
        download, manifests, download / "ADNIMERGE.csv", root / "adni_bids"
    )
    config = {**tiny, "cohort": {"source": "bids", "bids_dir": str(dataset)}}
    config_path = root / "config_bids.yaml"
    config_path.write_text(yaml.safe_dump(config))
    workdir = root / "work"
    workdir.mkdir()
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config_path),
        "--cores",
        "2",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=2400, env=snakemake_env()
    )
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}"
            for p in sorted(workdir.glob("results/logs/**/*.log"))
        )
        raise AssertionError(f"snakemake failed:\n{result.stderr[-6000:]}\n{logs[-10000:]}")
    return workdir, dataset


def test_the_whole_study_runs_from_a_clinica_bids_dataset(bids_study):
    workdir, dataset = bids_study
    results = workdir / "results"
    pairs = pd.read_csv(results / "ingest" / "pairs.tsv", sep="\t", dtype=str)
    subjects = sorted(p.name for p in dataset.glob("sub-*") if p.is_dir())
    assert set(pairs["participant_id"]) <= set(subjects)
    assert len(pairs) == 4  # the tiny study's four intended pairs
    assert all(pairs["mri_image_id"].str.contains("/anat/"))
    excluded = pd.read_csv(results / "ingest" / "excluded.tsv", sep="\t", dtype=str)
    assert excluded["reason"].str.startswith("tracer 18FAV45 is not FDG").any()
    assert (results / "tables" / "table1.md").is_file()
    assert (results / "report" / "front_page.rst").is_file()


def test_validator_accepts_the_raw_tree_and_the_derivative(bids_study):
    workdir, _ = bids_study
    results = workdir / "results"
    assert validator_errors(results / "bids") == []
    derivative = results / "derivatives" / "preprocess"
    description = json.loads((derivative / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"] and description["SourceDatasets"]
    assert validator_errors(derivative) == []


def test_validator_accepts_the_tiny_study_outputs(tiny_study):
    """The default (IDA-path) tiny study: raw tree and derivative without validator errors."""
    results = tiny_study / "results"
    assert validator_errors(results / "bids") == []
    assert validator_errors(results / "derivatives" / "preprocess") == []
