"""The pre-flight summary (results/study.txt), and a study config that stands on its own:
config/config.yaml (the CPU demo) is loaded only when no --configfile is given."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusion3d.config import network_train_config, networks_of, resolve
from fusion3d.preflight import (
    COUNTED_BY_TRAINING,
    network_parameters,
    parameter_counts,
    study_summary,
    write_study_summary,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
COHORT = {"source": "adni", "download_dir": "data/adni", "manifests": ["data/adni/C_1_1_2024.csv"]}


def _train_configs(config: dict) -> dict:
    return {n: network_train_config(config, n, 1) for n in networks_of(config)}


def test_a_cohort_only_config_takes_the_schema_defaults_not_the_demo():
    config = resolve({"cohort": COHORT}, SCHEMA)
    assert config["preprocess"]["grid"] == 128 != DEMO["preprocess"]["grid"]
    assert config["preprocess"]["mni_resolution_mm"] == 1.0
    # every network of the default methods gets an entry: its published sizes
    assert set(config["models"]) == set(networks_of(config))
    assert config["models"]["dcfb3d"] == {"spatial_dims": 3}
    assert config["models"]["dcfb2d"] == {"spatial_dims": 2}
    assert "epochs" not in config["train"]  # each network's published epochs


def test_study_summary_names_what_will_run(tmp_path):
    config = resolve(copy.deepcopy(DEMO), SCHEMA)
    sizes = {n: network_parameters(n, config["models"][n]) for n in ("dcfb3d", "dcfb2d")}
    assert 1.5e6 < sizes["dcfb3d"] < 2.0e6  # the demo's 1.7 M-parameter network
    text = study_summary(config, _train_configs(config), sizes)
    for part in (
        "cohort: synthetic, 16 subjects (seed 0)",
        "grid 64^3",
        "device: CPU (resources.gpu: false)",
        f"dcfb3d: {sizes['dcfb3d'] / 1e6:.2f} M parameters, 12 epochs, lr 0.0001, batch 1",
        "seeds: 3407, 1",
        "methods: swinfuse, matr, dilran, dcfb3d, dcfb2d, average",
        "protocols: paper, volume, suite2d (reference dcfb3d)",
        "probe: AD_vs_CN, 10 x 5-fold on splits train, val, test (at least 5 a class); "
        "the T1 also by regional GM volumes (Atropos)",
    ):
        assert part in text, part
    assert "WARNING" not in text
    path = write_study_summary(text, tmp_path / "results" / "study.txt")
    assert path.read_text() == text


def test_parameter_counts_are_exact_with_torch_and_left_to_training_without(monkeypatch):
    config = resolve(copy.deepcopy(DEMO), SCHEMA)
    counts = parameter_counts(config, ["matr", "dilran"])
    assert counts == {n: network_parameters(n, config["models"][n]) for n in ("matr", "dilran")}
    assert counts["matr"] == 13_422
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch: ImportError
    assert parameter_counts(config, ["matr", "dilran"]) == {}
    text = study_summary(config, _train_configs(config), {})
    assert f"  matr: {COUNTED_BY_TRAINING}, 12 epochs, lr 0.001, batch 4" in text


def test_study_summary_names_each_networks_patience():
    """train.patience (schema default null: off) and a network's own in train.overrides."""
    config = resolve(copy.deepcopy(DEMO), SCHEMA)
    assert config["train"]["patience"] is None
    off = study_summary(config, _train_configs(config), {})
    assert f"  matr: {COUNTED_BY_TRAINING}, 12 epochs, lr 0.001, batch 4" in off
    assert "patience" not in off  # off: study.txt as before early stopping
    config["train"]["patience"] = 3
    config["train"]["overrides"]["matr"]["patience"] = 5
    text = study_summary(config, _train_configs(config), {})
    assert f"  matr: {COUNTED_BY_TRAINING}, up to 12 epochs (patience 5 validation checks)" in text
    assert "dcfb3d: " + COUNTED_BY_TRAINING + ", up to 12 epochs (patience 3 validation" in text


def test_study_summary_of_the_paper_config_uses_each_recipe():
    config = resolve(yaml.safe_load((REPO / "config" / "adni.yaml").read_text()), SCHEMA)
    text = study_summary(config, _train_configs(config), {"dcfb3d": 97_606_202})
    assert "dcfb3d: 97.61 M parameters, 500 epochs, lr 0.0001, batch 1" in text
    assert f"dcfb2d: {COUNTED_BY_TRAINING}, 500 epochs" in text
    assert "cohort list config/cohorts/dc2fusion_image_ids.csv (1,324 image IDs)" in text
    assert "device: CUDA GPU (1 for training)" in text


@pytest.mark.slow
def test_a_configfile_stands_on_its_own(tmp_path):
    """With --configfile the demo is not loaded: a config/config.yaml that would fail the
    schema is never read, and the user's config takes the schema's defaults."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("not_a_key_of_the_schema: 1\n")
    (tmp_path / "data" / "adni").mkdir(parents=True)
    (tmp_path / "data" / "adni" / "C_1_1_2024.csv").write_text('"Image Data ID","Subject"\n')
    (tmp_path / "user.yaml").write_text(yaml.safe_dump({"cohort": COHORT}))
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "1"]
    command += ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    result = subprocess.run(
        [*command, "--configfile", str(tmp_path / "user.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert "not_a_key_of_the_schema" not in out, out[-3000:]
    # without --configfile, the demo (here: the broken one) is what the run reads
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "not_a_key_of_the_schema: unknown key" in out, out[-3000:]
