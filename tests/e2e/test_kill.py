"""A kill (SIGKILL of the whole workflow) costs only the jobs that were running.

The tiny study is killed once during preprocessing and once during training, then run again to the
end. Nothing completed before a kill is redone, training resumes from its checkpoint, and on CPU the
final metrics equal those of an uninterrupted run (the ``tiny_study`` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_snakemake, snakemake_command, snakemake_env

pytestmark = pytest.mark.slow


def start(workdir: Path) -> subprocess.Popen:
    command = snakemake_command(workdir, "--cores", "2", "--rerun-incomplete")
    log = open(workdir / f"snakemake-{time.time_ns()}.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=snakemake_env(), start_new_session=True
    )


def kill_when(process: subprocess.Popen, condition, timeout: float = 900) -> None:
    """SIGKILL the workflow's whole process group as soon as ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"workflow ended (rc {process.returncode}) before the kill point")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("kill point not reached in time")
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def mtimes(paths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def test_kill_during_preprocessing_and_training_then_finish(tiny_study, tmp_path):
    results = tmp_path / "results"

    # 1. Kill while subjects are being preprocessed, once at least one is complete.
    def one_subject_done():
        return any(results.glob("preprocess/*/*_desc-model_mask.nii.gz")) and any(
            results.glob("benchmarks/preprocess/*.tsv")
        )

    kill_when(start(tmp_path), one_subject_done)
    done_before = [
        p.parent for p in results.glob("benchmarks/preprocess/*.tsv")
    ]  # a benchmark file is written only when a job completes
    completed = sorted(
        f
        for b in results.glob("benchmarks/preprocess/*.tsv")
        for f in (results / "preprocess" / b.stem).iterdir()
    )
    assert done_before and completed
    stamps = mtimes(completed)
    run_snakemake(tmp_path, "--unlock")

    # 2. Kill during training, after the first epoch's checkpoint is on disk.
    run_dir = results / "train" / "dcfb3d" / "seed-3407"
    last = run_dir / "state" / "checkpoints" / "last.pt"
    kill_when(
        start(tmp_path),
        lambda: last.exists() and not (run_dir / "model.pt").exists(),
    )
    assert last.exists()
    assert mtimes(completed) == stamps, "preprocessing completed before the kill was redone"
    run_snakemake(tmp_path, "--unlock")

    # 3. Finish.
    run_snakemake(tmp_path, "--cores", "2", "--rerun-incomplete")
    assert mtimes(completed) == stamps, "preprocessing completed before the kill was redone"
    log = (results / "logs" / "train" / "dcfb3d" / "seed-3407.log").read_text()
    assert "resum" in log.lower(), "training did not resume from its checkpoint"

    # Same split and same metrics as the uninterrupted run.
    for table in ("split/split.tsv", "tables/metrics_long.tsv"):
        ours = pd.read_csv(results / table, sep="\t")
        reference = pd.read_csv(tiny_study / "results" / table, sep="\t")
        pd.testing.assert_frame_equal(ours, reference, check_exact=True, obj=table)
