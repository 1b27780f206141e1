"""The real workflow, end to end, on a tiny synthetic cohort (4 subjects, 32^3 grid, 2 epochs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.slow

METHODS = ["dcfb3d", "dcfb2d", "average", "maximum", "pca", "wavelet", "laplacian"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_every_subject_method_and_metric_has_a_finite_row(tiny_study):
    results = tiny_study / "results"
    split = pd.read_csv(results / "split" / "split.tsv", sep="\t")
    used = split[split["split"].isin(["train", "val", "test"])]
    assert len(used) == 4 and set(used["split"]) == {"train", "val", "test"}
    long = pd.read_csv(results / "tables" / "metrics_long.tsv", sep="\t")
    assert list(long.columns[:7]) == [
        "subject_id",
        "split",
        "group",
        "method",
        "protocol",
        "metric",
        "value",
    ]
    assert set(long["method"]) == set(METHODS)
    assert set(long["protocol"]) == {"paper", "volume", "suite2d"}
    for (method, protocol), part in long.groupby(["method", "protocol"]):
        assert set(part["subject_id"]) == set(used["subject_id"]), (method, protocol)
    paper = long[long["protocol"] == "paper"]
    assert {"psnr", "ssim"} <= set(paper["metric"])
    assert all(math.isfinite(v) for v in long["value"]), long[~long["value"].apply(math.isfinite)]
    # every network once per seed (train.seeds of config.yaml, inherited), classic methods once
    seeds = long.groupby("method")["seed"].apply(lambda s: sorted(s.dropna().astype(int).unique()))
    for method in METHODS:
        assert seeds[method] == ([1, 3407] if method.startswith("dcfb") else []), method
    table1 = pd.read_csv(results / "tables" / "table1.csv")
    assert "PSNR sd across seeds" in table1.columns
    assert table1.set_index("Method").loc["DC2Fusion (ours)", "Seeds"] == 2


def test_one_run_layout_for_every_method(tiny_study):
    """fused/, metrics/ and probe/features/ hold <method>/<run>: seed-<n> for a network,
    deterministic for a classic method; train/ the networks' runs."""
    results = tiny_study / "results"
    runs = [(m, f"seed-{s}") for m in METHODS[:2] for s in (3407, 1)]
    runs += [(m, "deterministic") for m in METHODS[2:]]
    for method, run in runs:
        index = pd.read_csv(results / "fused" / method / run / "index.tsv", sep="\t")
        assert all(Path(p).parent.name == run for p in index["fused_path"]), (method, run)
        assert (results / "metrics" / method / f"{run}.tsv").is_file(), (method, run)
        assert (results / "probe" / "features" / method / f"{run}.tsv").is_file()
    assert sorted(p.parent.name for p in (results / "train").glob("*/*/model.pt")) == sorted(
        run for _, run in runs[:4]
    )
    assert sorted(p.name for p in (results / "fused").iterdir()) == sorted(METHODS)


def test_tables_and_figures_are_written(tiny_study):
    results = tiny_study / "results"
    table1 = (results / "tables" / "table1.md").read_text()
    assert "PSNR" in table1.upper() and table1.count("\n") >= len(METHODS) + 2
    for name in ("table1.csv", "table1.tex", "wilcoxon_holm.tsv", "by_group.tsv"):
        assert (results / "tables" / name).stat().st_size > 0
    pages = sorted((results / "figures" / "qc_montage").glob("page-*.png"))
    assert [p.name for p in pages] == ["page-001.png"]  # 4 subjects fit on one page
    assert pages[0].read_bytes()[:8] == PNG_SIGNATURE
    assert (results / "figures" / "qc_montage.pdf").stat().st_size > 1000
    for name in ("fusion_panel", "metric_boxes", "training_curves"):
        png = results / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 5000, name
        assert (results / "figures" / f"{name}.pdf").stat().st_size > 1000, name


def test_the_probe_runs_on_every_feature_set_and_says_why_it_has_no_numbers(tiny_study):
    results = tiny_study / "results"
    split = pd.read_csv(results / "split" / "split.tsv", sep="\t")
    used = split[split["split"].isin(["train", "val", "test"])]
    # regional features of T1 (means and GM volumes), PET and every run of every method
    # (a network per seed)
    expected = (
        ["t1", "t1vol", "pet"]
        + [f"{m}/seed-{s}" for m in METHODS[:2] for s in (3407, 1)]
        + [f"{m}/deterministic" for m in METHODS[2:]]
    )
    for key in expected:
        features = pd.read_csv(results / "probe" / "features" / f"{key}.tsv", sep="\t")
        assert sorted(features["subject_id"]) == sorted(used["subject_id"]), key
        assert (
            features.shape[1] == 1 + 83 and features.drop(columns="subject_id").notna().any().all()
        )
    probe = pd.read_csv(results / "tables" / "probe.tsv", sep="\t", keep_default_na=False)
    assert len(probe) == len(expected) + 2  # and T1 + PET, T1 GM volumes + PET side by side
    assert (probe["status"] == "skipped").all() and (probe["auc"] == "").all()
    assert probe["reason"].str.contains("probe.min_per_class is 5").all()
    assert "no AUC computed" in (results / "logs" / "probe" / "probe.log").read_text()
    for name in ("probe_auc.png", "probe_roc.png"):
        assert (results / "figures" / name).read_bytes()[:8] == PNG_SIGNATURE
    assert "tables/probe.tsv" in (results / "tables" / "table1.md").read_text()


def test_ingest_explains_every_image_left_out(tiny_study):
    results = tiny_study / "results"
    pairs = pd.read_csv(results / "ingest" / "pairs.tsv", sep="\t")
    excluded = pd.read_csv(results / "ingest" / "excluded.tsv", sep="\t")
    assert len(pairs) == 4
    assert (excluded["reason"].str.len() > 0).all()
    spec = json.loads((results / "synthetic" / "cohort.json").read_text())
    manifest = pd.concat([pd.read_csv(tiny_study / p) for p in spec["manifests"]])
    image_ids = set(manifest["Image Data ID"].astype(str).str.lstrip("I"))
    used = set(pairs["mri_image_id"].astype(str).str.lstrip("I")) | set(
        pairs["pet_image_id"].astype(str).str.lstrip("I")
    )
    explained = set(excluded["image_id"].astype(str).str.lstrip("I"))
    assert image_ids == used | explained and not (used & explained)


def test_provenance_and_qc(tiny_study):
    results = tiny_study / "results"
    record = json.loads((results / "provenance.json").read_text())
    assert record["config"]["preprocess"]["grid"] == 32 and record["inputs_sha256"]
    # per rule, the versions its jobs recorded (tests/e2e/test_envs_isolated.py runs each job
    # with only its env's packages)
    rules = record["rules"]
    assert rules["preprocess"]["jobs"] == 4 and rules["preprocess"]["packages"]["antspyx"]
    assert rules["train"]["torch"]["version"] and "pydicom" in rules["ingest"]["packages"]
    qc = pd.read_csv(results / "qc" / "qc.tsv", sep="\t")
    assert len(qc) == 4
    accuracy = pd.read_csv(results / "qc" / "accuracy.tsv", sep="\t")
    assert len(accuracy) == 4
    # The default brain extraction (deepbet; the unit tests use the ANTs template path)
    # against the synthetic truth: Dice 0.969-0.975 over the 16 default-study subjects,
    # 0.972 at this study's 2 mm MNI grid (one subject); PET -> T1 error 0.33-0.65 mm.
    assert accuracy["dice"].min() >= 0.95, accuracy
    assert accuracy["pet_to_t1_error_mm"].max() <= 1.0, accuracy


def test_second_run_has_nothing_to_do_and_report_builds(tiny_study):
    dry = run_snakemake(tiny_study, "-n", "--cores", "2")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    run_snakemake(tiny_study, "--cores", "1", "--report", "results/report.html")
    report = tiny_study / "results" / "report.html"
    assert report.stat().st_size > 10000
