"""The conda environments agree with the project's own pins, and every rule names one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import envcheck
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


# Every rule's env is complete: what its script can reach needs only what its env file lists.
# The analysis (tests/envcheck.py) reads the sources; the import name -> distribution map and
# the package-data files come from this venv's installed metadata.
WORKFLOW_RULES = envcheck.parse_rules()
SCRIPT_RULES = [r for r in WORKFLOW_RULES if r.script is not None]
#: The env files some rule runs in (not a driver's env, which runs no job).
RULE_ENV_FILES = [p for p in ENV_FILES if p.stem in {r.env for r in SCRIPT_RULES}]


def test_every_rule_names_an_env_and_a_script_that_exist():
    assert len(SCRIPT_RULES) >= 25, f"only {len(SCRIPT_RULES)} rules with a script parsed"
    for rule in WORKFLOW_RULES:
        if rule.name == "all":
            continue
        assert rule.env is not None, f"{rule.smk}: rule {rule.name} has no conda_env(...)"
        assert rule.script is not None and rule.script.is_file(), (
            f"{rule.smk}: rule {rule.name}: script {rule.script} not found"
        )


@pytest.mark.parametrize("rule", SCRIPT_RULES, ids=lambda r: f"{r.name}:{r.script.stem}")
def test_rule_env_provides_what_its_script_reaches(rule):
    problems = envcheck.missing_from_env(rule)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rule", SCRIPT_RULES, ids=lambda r: f"{r.name}:{r.script.stem}")
def test_package_data_ships_in_the_distribution_that_provides_it(rule):
    """The data files a rule reads are in the wheel of the distribution its env installs."""
    needs = envcheck.script_needs(rule.script)
    for dist, files in sorted(needs.data_files.items()):
        shipped = {str(f) for f in metadata.distribution(dist).files or []}
        for path in files:
            assert path in shipped, f"rule {rule.name}: {dist}'s wheel has no {path}"


def test_the_analysis_sees_function_level_imports_lazy_exports_and_package_data():
    """The checker itself: known facts of the library are found (not a test that cannot fail)."""
    preprocess = envcheck.script_needs(envcheck.REPO / "workflow/scripts/preprocess.py")
    # function-level imports (ants, deepbet) through the lazy export preprocess_pair -> pipeline
    assert "fusion3d.preprocess.pipeline" in preprocess.modules
    assert {"antspyx", "deepbet", "nilearn"} <= set(preprocess.distributions)
    assert "deepbet" in preprocess.data_files
    ingest = envcheck.script_needs(envcheck.REPO / "workflow/scripts/ingest.py")
    assert {"pydicom", "dcm2niix", "nipype"} <= set(ingest.distributions)
    viewer = envcheck.script_needs(envcheck.REPO / "workflow/scripts/viewer.py")
    assert "nilearn/plotting/data/js/brainsprite.min.js" in viewer.data_files["nilearn"]
    # set_threads' `import torch` sits in try/except ImportError: optional, not required
    split = envcheck.script_needs(envcheck.REPO / "workflow/scripts/split.py")
    assert "torch" not in split.distributions


def test_the_analysis_flags_a_missing_distribution_data_file_or_binary(tmp_path):
    """What a script imports, reads or runs that its env lacks is reported, naming the rule."""
    script = tmp_path / "s.py"
    script.write_text(
        '"""brainsprite.min.js in a docstring is not a read."""\n'
        "import shutil\n"
        "def f():\n"
        "    import pydicom\n"
        "    return shutil.which('dcm2niix'), shutil.which('mystery'), 'brainsprite.min.js'\n"
        "try:\n"
        "    import abagen\n"
        "except ImportError:\n"
        "    abagen = None\n"
    )
    rule = envcheck.Rule(name="r", smk="x.smk", env="train", script=script)
    problems = "\n".join(envcheck.missing_from_env(rule))
    for expected in (
        "pydicom not provided by envs/train.yaml",
        "dcm2niix not provided by envs/train.yaml",
        "nilearn not provided by envs/train.yaml",
        "cannot tell what provides binary mystery",
    ):
        assert expected in problems, problems
    assert "abagen" not in problems  # an optional import
    script.write_text('"""Only a docstring names brainsprite.min.js."""\n')
    assert envcheck.missing_from_env(rule) == []


@pytest.mark.parametrize("path", RULE_ENV_FILES, ids=lambda p: p.name)
def test_env_lists_nothing_its_rules_do_not_need(path):
    """Each distribution an env file lists is needed by a rule that runs in it."""
    needed: set[str] = set()
    for rule in SCRIPT_RULES:
        if rule.env == path.stem:
            needed |= set(envcheck.script_needs(rule.script).distributions)
    unused = envcheck.env_distributions(path.stem) - needed
    assert not unused, f"{path.name}: no rule running in it needs {sorted(unused)}"


@pytest.mark.parametrize("path", RULE_ENV_FILES, ids=lambda p: p.name)
def test_env_imports_every_module_its_rules_reach(path, repo):
    """Every module the env's rules reach imports with only the env's distributions importable
    (the others hidden): catches what a third-party package imports on its own."""
    modules = sorted(
        {
            m
            for rule in SCRIPT_RULES
            if rule.env == path.stem
            for m in envcheck.script_needs(rule.script).modules
        }
    )
    allowed = envcheck.env_provides(path.stem) | envcheck.PROVIDED_BY_SNAKEMAKE
    code = envcheck.hide_distributions_code(allowed) + (
        f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{path.name}: {done.stderr.strip().splitlines()[-1]}"
