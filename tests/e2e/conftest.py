"""Fixtures of the end-to-end tests: the real workflow on a tiny synthetic cohort."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "tests" / "e2e" / "config_tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake_env() -> dict[str, str]:
    """Environment of a workflow run: one thread per library unless the rule says otherwise."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONHASHSEED"] = "0"
    return env


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command that runs the project's Snakefile in ``workdir`` with the tiny config."""
    return [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(TINY_CONFIG),
        *args,
    ]


def run_snakemake(workdir: Path, *args: str, timeout: int = 1500, check: bool = True):
    """Run the project's Snakefile in ``workdir`` with the tiny config; return the CompletedProcess."""
    command = snakemake_command(workdir, *args)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=snakemake_env()
    )
    if check and result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}"
            for p in sorted(workdir.glob("results/logs/**/*.log"))
        )
        raise AssertionError(
            f"snakemake failed ({result.returncode}): {' '.join(command)}\n"
            f"{result.stdout[-5000:]}\n{result.stderr[-8000:]}\n{logs[-12000:]}"
        )
    return result


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """The tiny study run once, locally with 2 cores; returns its working directory."""
    workdir = tmp_path_factory.mktemp("tiny_study")
    run_snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture(scope="session")
def tiny_cohort(tiny_study, tmp_path_factory) -> Path:
    """A copy of the tiny study's synthetic cohort (for tests that start from it)."""
    target = tmp_path_factory.mktemp("tiny_cohort") / "synthetic"
    shutil.copytree(tiny_study / "results" / "synthetic", target)
    return target
