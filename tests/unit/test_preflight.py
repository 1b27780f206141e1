"""The pre-flight summary (results/study.txt) and the warning of a real cohort that would run
with the CPU demo's model or training values."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusion3d import workflow as f3d

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
COHORT = {"source": "adni", "download_dir": "data/adni", "manifests": ["data/adni/C_1_1_2024.csv"]}


def _study(user: dict) -> dict:
    """The config as the Snakefile builds it: the demo, then the user's file, validated."""
    config = copy.deepcopy(DEMO)
    for key, value in user.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **copy.deepcopy(value)}
        else:
            config[key] = copy.deepcopy(value)
    return f3d.validate_config(config, SCHEMA)


def _train_configs(config: dict) -> dict:
    nets = [m for m in config["methods"] if m in f3d.NETWORK_METHODS]
    common = {k: v for k, v in config["train"].items() if k not in ("seeds", "overrides")}
    return {n: {**common, **config["train"]["overrides"].get(n, {}), "seed": 1} for n in nets}


def test_cohort_keys_alone_take_the_demo_model_and_are_named():
    user = {"cohort": COHORT}
    keys = f3d.demo_keys(_study(user), user, DEMO)
    for key in ("preprocess.grid", "models.dcfb3d", "models.dcfb2d", "train.epochs"):
        assert key in keys
    assert keys["preprocess.grid"] == 64 and keys["train.epochs"] == DEMO["train"]["epochs"]
    text = f3d.demo_warning(keys)
    assert text.startswith("WARNING: cohort.source is adni")
    assert "preprocess.grid = 64" in text and "models.dcfb3d: the demo's network" in text
    assert f"train.epochs = {DEMO['train']['epochs']}" in text and "config/adni.yaml" in text


def test_the_paper_config_takes_nothing_from_the_demo():
    user = yaml.safe_load((REPO / "config" / "adni.yaml").read_text())
    # the demo's train.epochs (30) is still in the merged config, but every network of the
    # paper config overrides it (train.overrides.<net>.epochs: its published number)
    config = _study(user)
    assert config["train"]["epochs"] == DEMO["train"]["epochs"]
    assert f3d.demo_keys(config, user, DEMO) == {}
    # a network without its own settings would train with the demo's: named
    user = copy.deepcopy(user)
    del user["train"]["overrides"]["matr"]
    assert f3d.demo_keys(_study(user), user, DEMO) == {
        "train.epochs": DEMO["train"]["epochs"],
        "train.overrides.matr": DEMO["train"]["overrides"]["matr"],
    }


def test_keys_the_user_set_are_not_named_and_unused_networks_are_skipped():
    user = {
        "cohort": COHORT,
        "preprocess": {"grid": 128},
        "models": {"dcfb3d": {"embed_dim": 96}},
        "train": {"slices_per_volume": 16},
        "methods": ["dcfb3d", "average"],
    }
    keys = f3d.demo_keys(_study(user), user, DEMO)
    assert "preprocess.grid" not in keys and "train.slices_per_volume" not in keys
    assert "models.dcfb3d" not in keys and "models.dcfb2d" not in keys
    assert "train.overrides.dcfb2d" not in keys and "train.overrides.dcfb3d" in keys
    # the rest of a network entry the user gave is still the demo's (nested sections merge)
    assert keys["models.dcfb3d.depths"] == [1, 1, 2, 1] and "models.dcfb3d.embed_dim" not in keys


def test_the_demo_itself_is_not_warned():
    assert f3d.demo_keys(_study({}), {}, DEMO) == {}
    assert f3d.demo_warning({}) == ""


def test_loaded_demo_config_only_when_the_directive_loaded_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert f3d.loaded_demo_config(["config/config.yaml"]) == {}  # not in this directory
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("results: r\n")
    assert f3d.loaded_demo_config([Path("my.yaml")]) == {}
    assert f3d.loaded_demo_config(["config/config.yaml"]) == {"results": "r"}


def test_study_summary_names_what_will_run(tmp_path):
    user = {"cohort": COHORT}
    config = _study(user)
    demo = f3d.demo_keys(config, user, DEMO)
    sizes = {n: f3d.network_parameters(n, config["models"][n]) for n in ("dcfb3d", "dcfb2d")}
    assert 1.5e6 < sizes["dcfb3d"] < 2.0e6  # the demo's 1.7 M-parameter network
    text = f3d.study_summary(config, _train_configs(config), sizes, demo)
    for part in (
        "cohort: adni, download data/adni",
        "grid 64^3",
        "device: CPU (resources.gpu: false)",
        f"dcfb3d: {sizes['dcfb3d'] / 1e6:.2f} M parameters, 12 epochs, lr 0.0001, batch 1",
        "[models from config/config.yaml, the demo]",
        "seeds: 3407, 1",
        "methods: swinfuse, matr, dilran, dcfb3d, dcfb2d, average",
        "protocols: paper, volume, suite2d (reference dcfb3d)",
        "WARNING: cohort.source is adni",
    ):
        assert part in text, part
    path = f3d.write_study_summary(text, tmp_path / "results" / "study.txt")
    assert path.read_text() == text


def test_study_summary_of_the_paper_config_uses_each_recipe():
    config = _study(yaml.safe_load((REPO / "config" / "adni.yaml").read_text()))
    text = f3d.study_summary(config, _train_configs(config), {"dcfb3d": 97_606_202})
    assert "dcfb3d: 97.61 M parameters, 500 epochs, lr 0.0001, batch 1" in text
    assert "dcfb2d: size ?, 500 epochs" in text
    assert "cohort list config/cohorts/dc2fusion_image_ids.csv (1,324 image IDs)" in text
    assert "device: CUDA GPU (1 for training)" in text and "WARNING" not in text


@pytest.mark.slow
def test_snakemake_warns_before_the_dag_of_a_cohort_only_config(tmp_path):
    """The Snakefile prints the warning (dry-run: before any job; study.txt is onstart's)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "data" / "adni").mkdir(parents=True)
    (tmp_path / "data" / "adni" / "C_1_1_2024.csv").write_text('"Image Data ID","Subject"\n')
    (tmp_path / "user.yaml").write_text(yaml.safe_dump({"cohort": COHORT}))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1"]
        + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
        + ["--configfile", str(tmp_path / "user.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert "WARNING: cohort.source is adni" in out and "preprocess.grid = 64" in out
