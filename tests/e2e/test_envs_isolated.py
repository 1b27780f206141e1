"""The tiny study with every job restricted to its rule's environment, and its provenance.

No conda here, so each job runs in this venv's interpreter with every distribution that its
rule's env file does not install hidden from import (``tests/envhide/sitecustomize.py``):
a job that needs a package its env lacks fails as it would under ``--use-conda``. The
versions are this venv's (the env files pin the same ones, tests/unit/test_envs.py). What
this does not check: each env's pip lines resolving together on their own (no venv per env
is built: that needs the package index and minutes per env).
"""

from __future__ import annotations

import json

import envcheck
import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def isolated_study(tmp_path_factory, monkeypatch_module):
    workdir = tmp_path_factory.mktemp("isolated_study")
    allowed = {
        rule.name: sorted(envcheck.env_provides(rule.env))
        for rule in envcheck.parse_rules()
        if rule.env is not None
    }
    table = workdir / "allowed.json"
    table.write_text(json.dumps(allowed))
    monkeypatch_module.setenv("FUSION3D_ENV_ALLOWED", str(table))
    monkeypatch_module.setenv(
        "PYTHONPATH", f"{envcheck.REPO / 'tests' / 'envhide'}:{envcheck.REPO / 'src'}"
    )
    run_snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_job_ran_in_its_env_and_provenance_gives_its_versions(isolated_study):
    results = isolated_study / "results"
    record = json.loads((results / "provenance.json").read_text())
    rules = record["rules"]
    by_env = {r.name: r.env for r in envcheck.parse_rules() if r.env is not None}
    # what the job's env installs; Snakemake and what it imports to unpickle the job (from the
    # driver's path, which Snakemake appends); setuptools' .pth hook, in every venv with pip
    driver = envcheck.closure({"snakemake"}) | {"setuptools"}
    for rule, entry in rules.items():
        assert entry["failed_jobs"] == 0, rule
        provided = envcheck.env_provides(by_env[rule]) | driver
        imported = {envcheck.canonicalize_name(d) for d in entry["packages"]}
        assert imported <= provided, (rule, sorted(imported - provided))
    # the torch of the networks' env is recorded for training, and for no job of the evaluate env
    assert "torch" in rules["train"]["packages"] and rules["train"]["torch"]["version"]
    assert "torch" not in rules["viewer"]["packages"] and rules["viewer"]["torch"] is None
    assert rules["viewer"]["package_data"]["nilearn"] == [
        "nilearn/plotting/data/js/brainsprite.min.js"
    ]
    assert {"preprocess", "qc_table", "ingest", "evaluate_pass", "infer", "provenance"} <= set(
        rules
    )
