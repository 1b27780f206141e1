"""The conda environments agree with the project's own pins, and every rule names one."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def project_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {r.name.lower(): r for r in reqs}


def env_requirements(path: Path) -> list[Requirement]:
    env = yaml.safe_load(path.read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    lines = pip[0]["pip"] if pip else []
    return [Requirement(line) for line in lines if not line.startswith("-")]


#: The driver's env (what runs `snakemake` itself under --use-conda); every other is a stage's.
DRIVER_ENV = "snakemake"
#: All that the driver may hold (issue 35): Snakemake, its SLURM plugin, pandas, PyYAML and
#: jsonschema (Snakemake's own dependency).
DRIVER_PACKAGES = {"snakemake", "snakemake-executor-plugin-slurm", "pandas", "pyyaml", "jsonschema"}


def test_there_is_one_env_per_stage_and_one_for_the_driver():
    stages = {p.stem for p in ENV_FILES} - {DRIVER_ENV}
    assert stages == {"ingest", "preprocess", "train", "evaluate"}
    assert (REPO / "envs" / f"{DRIVER_ENV}.yaml").is_file()


def test_the_driver_env_holds_snakemake_and_small_packages_only():
    reqs = {r.name.lower() for r in env_requirements(REPO / "envs" / f"{DRIVER_ENV}.yaml")}
    assert {"snakemake", "snakemake-executor-plugin-slurm"} <= reqs
    assert reqs <= DRIVER_PACKAGES, f"envs/snakemake.yaml: {sorted(reqs - DRIVER_PACKAGES)}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_match_pyproject(path):
    project = project_requirements()
    env = yaml.safe_load(path.read_text())
    assert "python=3.11" in env["dependencies"], f"{path.name}: python must be 3.11 like pyproject"
    for req in env_requirements(path):
        name = req.name.lower()
        assert name in project, f"{path.name}: {req.name} is not a dependency in pyproject.toml"
        ours = project[name]
        pinned = [s for s in req.specifier if s.operator == "=="]
        if pinned:
            version = Version(pinned[0].version)
            assert version in ours.specifier, f"{path.name}: {req} outside pyproject's {ours}"
            project_pins = [s for s in ours.specifier if s.operator == "=="]
            if project_pins:
                assert str(req.specifier) == str(ours.specifier), f"{path.name}: {req} != {ours}"
        else:
            assert str(req.specifier) == str(ours.specifier), f"{path.name}: {req} != {ours}"


def test_training_env_has_a_cuda_torch():
    text = (REPO / "envs" / "train.yaml").read_text()
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", text), "train env must pull a CUDA build"
    assert any(r.name == "torch" for r in env_requirements(REPO / "envs" / "train.yaml"))


def test_every_rule_has_a_conda_env_that_exists():
    rules = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    envs = {p.stem for p in ENV_FILES} - {DRIVER_ENV}
    for path in rules:
        text = path.read_text()
        n_rules = len(re.findall(r"^(?:rule|checkpoint) \w+:", text, flags=re.M))
        used = re.findall(r'conda_env\("(\w+)"\)', text)
        assert len(used) == n_rules, (
            f"{path.name}: {n_rules} rules but {len(used)} conda: directives"
        )
        assert set(used) <= envs, f"{path.name}: unknown env(s) {set(used) - envs}"
