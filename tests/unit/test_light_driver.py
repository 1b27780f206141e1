"""A Snakemake-only driver (issue 35): from a venv holding only the packages of
``envs/snakemake.yaml`` (and fusion3d without its dependencies), ``snakemake -n`` parses the
workflow, checks the config, builds the DAG and prints the pre-flight summary, for the default
study and for ``config/adni.yaml`` on a small fixture download.

The ``slow`` tests build that venv from PyPI (about a minute) and run both dry runs in it; the
fast one runs the default study's dry run in this interpreter with the heavy packages blocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fixtures_adni as fx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

#: What a Snakemake-only driver must not hold (the jobs' environments do).
HEAVY = ("torch", "monai", "scipy", "nibabel", "cv2", "numba", "pydicom", "skimage", "sklearn")

#: Run snakemake in this interpreter with every package of HEAVY unimportable.
BLOCKED_SNAKEMAKE = """
import sys
from importlib.abc import MetaPathFinder

class Blocked(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)

HEAVY = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Blocked())
from snakemake.cli import main
sys.argv = ["snakemake", *sys.argv[2:]]
main()
"""


def _pip_lines(env_file: Path) -> list[str]:
    env = yaml.safe_load(env_file.read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return [line for line in pip[0]["pip"] if not line.startswith("-")]


def _clean_env() -> dict[str, str]:
    """The environment without this interpreter's paths (nothing leaks into the driver)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1"}


def test_a_dry_run_needs_no_heavy_package(tmp_path):
    """The rule files, the config checks and the summary import nothing of HEAVY."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_SNAKEMAKE, ",".join(HEAVY), "-n", "--cores", "1"]
        + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
        + ["--configfile", str(REPO / "config" / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    _assert_summary(
        result,
        "networks (5):",
        "  matr: parameters in the train job's log (no torch in the driver), 12 epochs",
    )


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    """A venv with the pip lines of envs/snakemake.yaml and fusion3d (``--no-deps``)."""
    python = shutil.which("python3.11")
    if python is None:
        pytest.skip("python3.11 is not on PATH")
    root = tmp_path_factory.mktemp("driver")
    venv = root / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    env = _clean_env()
    subprocess.run(
        [*pip, *_pip_lines(REPO / "envs" / "snakemake.yaml")], check=True, env=env, timeout=600
    )
    # the project from a copy (its build writes beside its sources), without its dependencies
    project = root / "project"
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    subprocess.run([*pip, "--no-deps", str(project)], check=True, env=env, timeout=600)
    return venv


def _dry_run(venv: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "snakemake"), "-n", "--cores", "1", "--snakefile"]
        + [str(REPO / "Snakefile"), "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=300,
    )


def _assert_summary(result: subprocess.CompletedProcess, *lines: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "fusion3d study" in result.stdout, out[-3000:]
    for line in lines:
        assert line in result.stdout, (line, result.stdout)


@pytest.mark.slow
def test_the_driver_holds_no_heavy_package(driver):
    code = f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"
    out = subprocess.run(
        [str(driver / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        env=_clean_env(),
        check=True,
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_dry_run_of_the_default_study_prints_the_summary(driver, tmp_path):
    result = _dry_run(driver, tmp_path, "--configfile", str(REPO / "config" / "config.yaml"))
    _assert_summary(
        result,
        "cohort: synthetic, 16 subjects (seed 0)",
        "networks (5):",
        "  dcfb3d: parameters in the train job's log (no torch in the driver), 12 epochs",
        "methods: swinfuse, matr, dilran, dcfb3d, dcfb2d, average",
    )
    assert "train" in result.stdout and "total" in result.stdout  # the job table
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_a_dry_run_of_the_adni_config_on_a_download_prints_the_summary(driver, tmp_path):
    # config/adni.yaml's paths are relative to the working directory (--directory)
    download = tmp_path / "data" / "adni"
    (download / "ADNI").mkdir(parents=True)
    rows = []
    for i, group in enumerate(("CN", "AD")):
        rows += fx.add_subject(
            download, f"002_S_000{i + 1}", t1_id=1000 + i, pet_id=2000 + i, group=group
        )
    fx.write_manifest(download / "DC2FUSION_11_25_2026.csv", rows)
    (download / "ADNIMERGE.csv").write_text(
        "RID,PTID,VISCODE,EXAMDATE,DX_bl,DX\n1,002_S_0001,bl,2012-01-20,CN,CN\n"
        "2,002_S_0002,bl,2012-01-20,AD,Dementia\n"
    )
    ids = tmp_path / "ids.csv"
    ids.write_text("I1000,I2000,I1001,I2001\n")
    result = _dry_run(
        driver,
        tmp_path,
        "--configfile",
        str(REPO / "config" / "adni.yaml"),
        "--config",
        f"cohort={{'image_ids': '{ids}'}}",
    )
    _assert_summary(
        result,
        f"cohort: adni, download data/adni, cohort list {ids} (4 image IDs)",
        "preprocessing: grid 128^3, MNI 1.0 mm",
        "  dcfb3d: parameters in the train job's log (no torch in the driver), 500 epochs",
        "seeds: 3407, 1, 2",
    )
    assert "ingest" in result.stdout
