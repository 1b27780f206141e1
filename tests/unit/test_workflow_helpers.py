"""Helpers of the rules: subject tables, cohort inputs, script logging, provenance."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from fusion3d.ingest.sources import cohort_inputs
from fusion3d.io import write_tsv
from fusion3d.jobs import script_logging, training_memory_mb
from fusion3d.provenance import sha256, write_provenance
from fusion3d.subjects import read_pairs, split_with_inputs


def pairs_frame(n=2):
    return pd.DataFrame(
        {
            "participant_id": [f"sub-ADNI002S{i:04d}" for i in range(n)],
            "session_id": ["ses-M000"] * n,
            "ptid": [f"002_S_{i:04d}" for i in range(n)],
            "group": ["CN"] * n,
            "mri_path": [f"m{i}.nii.gz" for i in range(n)],
            "pet_path": [f"p{i}.nii.gz" for i in range(n)],
        }
    )


def test_read_pairs_adds_subject_ids(tmp_path):
    write_tsv(pairs_frame(), tmp_path / "pairs.tsv")
    table = read_pairs(tmp_path / "pairs.tsv")
    assert table["subject_id"].tolist() == [
        "sub-ADNI002S0000_ses-M000",
        "sub-ADNI002S0001_ses-M000",
    ]


def test_read_pairs_rejects_a_subject_listed_twice(tmp_path):
    frame = pd.concat([pairs_frame(), pairs_frame(1)])
    write_tsv(frame, tmp_path / "pairs.tsv")
    with pytest.raises(ValueError, match="listed twice: sub-ADNI002S0000_ses-M000"):
        read_pairs(tmp_path / "pairs.tsv")


def test_read_pairs_names_a_missing_column(tmp_path):
    write_tsv(pairs_frame().drop(columns="pet_path"), tmp_path / "pairs.tsv")
    with pytest.raises(ValueError, match=r"pairs.tsv: missing column\(s\) pet_path"):
        read_pairs(tmp_path / "pairs.tsv")


def adni_config(tmp_path, **cohort):
    base = {"source": "adni", "download_dir": str(tmp_path), "manifests": [str(tmp_path / "*.csv")]}
    base.update(cohort)
    return {"cohort": base}


def test_cohort_inputs_resolves_globs(tmp_path):
    (tmp_path / "B_1_2_2020.csv").write_text("x")
    (tmp_path / "A_1_2_2020.csv").write_text("x")
    inputs = cohort_inputs(adni_config(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in inputs["manifests"]] == [
        "A_1_2_2020.csv",
        "B_1_2_2020.csv",
    ]


@pytest.mark.parametrize(
    "cohort, message",
    [
        ({"download_dir": None}, "cohort.download_dir is required"),
        ({"download_dir": "/nonexistent/adni"}, "is not a folder"),
        ({"manifests": []}, "cohort.manifests is required"),
        ({"manifests": ["/nonexistent/*.csv"]}, "matches no file"),
        ({"adnimerge": "/nonexistent/ADNIMERGE.csv"}, "cohort.adnimerge"),
    ],
)
def test_cohort_inputs_errors_name_the_key(tmp_path, cohort, message):
    (tmp_path / "A_1_2_2020.csv").write_text("x")
    with pytest.raises(ValueError, match=message):
        cohort_inputs(adni_config(tmp_path, **cohort))


def test_script_logging_writes_the_traceback_of_a_failure(tmp_path):
    log = tmp_path / "logs" / "x.log"
    with pytest.raises(RuntimeError), script_logging(log) as logger:
        logger.info("started")
        raise RuntimeError("boom in the script")
    text = log.read_text()
    assert "started" in text and "boom in the script" in text and "Traceback" in text
    assert not any(
        isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) and h.stream.closed
        for h in logging.getLogger().handlers
    )


def test_provenance_records_versions_config_and_checksums(tmp_path):
    (tmp_path / "m0.nii.gz").write_bytes(b"mri")
    (tmp_path / "p0.nii.gz").write_bytes(b"pet")
    manifest = tmp_path / "A_1_2_2020.csv"
    manifest.write_text("header\n")
    frame = pairs_frame(1)
    frame["mri_path"] = [str(tmp_path / "m0.nii.gz")]
    frame["pet_path"] = [str(tmp_path / "p0.nii.gz")]
    write_tsv(frame, tmp_path / "pairs.tsv")
    out = write_provenance(
        tmp_path / "provenance.json",
        config={"results": "r"},
        workflow_dir=tmp_path,
        inputs=[manifest],
        pairs_tsv=tmp_path / "pairs.tsv",
    )
    record = json.loads(out.read_text())
    assert record["config"] == {"results": "r"}
    assert record["rules"]["provenance"]["packages"]["numpy"]  # this process imported numpy
    assert record["inputs_sha256"][str(manifest)] == sha256(manifest)
    assert str(tmp_path / "p0.nii.gz") in record["inputs_sha256"]
    assert set(record["git"]) == {"commit", "dirty"}


def test_provenance_names_a_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        write_provenance(
            tmp_path / "p.json", config={}, workflow_dir=tmp_path, inputs=[tmp_path / "missing.csv"]
        )


def test_training_memory_mb_counts_every_pair_in_float32():
    # 660 subjects at the paper's 128^3: 660 x 2 x 128^3 x 4 bytes = 11,072.4 MB on top of the base
    assert training_memory_mb(660, 128) == 6000 + 11073
    assert training_memory_mb(16, 64, base_mb=1000) == 1000 + 34  # 33.55 MB, rounded up
    assert training_memory_mb(0, 64) == 6000
    with pytest.raises(ValueError, match="grid"):
        training_memory_mb(4, 0)


def test_split_with_inputs_takes_images_from_the_declared_inputs():
    split = pd.DataFrame(
        {
            "subject_id": ["sub-A_ses-M000", "sub-B_ses-M000"],
            "split": ["train", "excluded"],
            "model_mri": ["old/a_mri", "old/b_mri"],
            "model_pet": ["old/a_pet", "old/b_pet"],
            "model_mask": ["old/a_mask", "old/b_mask"],
        }
    )
    inputs = [
        f"in/sub-A_ses-M000/sub-A_ses-M000_desc-model_{s}.nii.gz" for s in ("T1w", "pet", "mask")
    ]
    out = split_with_inputs(split, inputs)
    assert list(out.iloc[0][["model_mri", "model_pet", "model_mask"]]) == inputs
    # a subject outside train/val/test keeps its row as it was; the input table is unchanged
    assert out.iloc[1]["model_mri"] == "old/b_mri" and split.iloc[0]["model_mri"] == "old/a_mri"
    with pytest.raises(ValueError, match="sub-A_ses-M000_desc-model_pet.nii.gz: not among"):
        split_with_inputs(split, inputs[:1] + inputs[2:])
