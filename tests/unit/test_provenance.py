"""Each job records its own environment beside its log; provenance.json merges them per rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import envcheck
import pytest
from packaging.utils import canonicalize_name

from fusion3d.jobs import versions_path
from fusion3d.provenance import collect_environments, merge_rule_records, write_provenance


def run_job(repo, tmp_path, body: str, hide: set[str] = frozenset()) -> dict:
    """Run ``body`` as a job's script (inside script_logging) in a fresh interpreter whose
    distributions ``hide`` cannot be imported; return the job's environment record."""
    log = tmp_path / "logs" / "stage" / "job.log"
    installed = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()}
    prelude = envcheck.hide_distributions_code(installed - set(hide)) if hide else ""
    script = prelude + textwrap.dedent(
        f"""
        from fusion3d.jobs import script_logging, set_threads
        with script_logging({str(log)!r}, rule="some_rule") as log:
            set_threads(1)
        """
    )
    script += textwrap.indent(textwrap.dedent(body), "    ")
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:] + (log.read_text() if log.exists() else "")
    return json.loads(versions_path(log).read_text())


def test_job_without_torch_records_no_torch_though_the_venv_has_it(repo, tmp_path):
    assert metadata.version("torch")  # installed here: a record copied from here would show it
    record = run_job(
        repo,
        tmp_path,
        """
        import numpy
        try:
            import torch
        except ImportError:
            log.info("no torch in this environment")
        """,
        hide={"torch"},
    )
    assert record["rule"] == "some_rule" and record["status"] == "ok"
    assert "torch" not in record["packages"] and record["torch"] is None
    assert record["packages"]["numpy"] == metadata.version("numpy")
    assert record["python"]["executable"] == sys.executable


def test_job_with_torch_records_torch_and_its_cuda_build(repo, tmp_path):
    record = run_job(repo, tmp_path, "import torch\n")
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["torch"]["version"].startswith(metadata.version("torch").split("+")[0])
    assert set(record["torch"]) >= {"cuda", "cudnn", "cuda_used"}
    assert record["torch"]["cuda_used"] is False  # this job never touched a GPU


def test_job_records_the_package_data_it_read_and_the_binaries_it_ran(repo, tmp_path):
    record = run_job(
        repo,
        tmp_path,
        """
        import os, subprocess
        from pathlib import Path
        from fusion3d.ingest.convert import find_dcm2niix
        from fusion3d.report.viewer import brainsprite_js
        assert brainsprite_js()
        # as nipype runs it: by name, through the shell, found on the PATH given to the child
        path = os.pathsep.join([str(Path(find_dcm2niix()).parent), "/usr/bin:/bin"])
        subprocess.run("dcm2niix -v", shell=True, capture_output=True, env={"PATH": path})
        """,
    )
    assert record["package_data"]["nilearn"] == ["nilearn/plotting/data/js/brainsprite.min.js"]
    assert record["packages"]["nilearn"] == metadata.version("nilearn")  # read, not imported
    assert record["binaries"]["dcm2niix"]["distribution"] == "dcm2niix"
    assert record["binaries"]["dcm2niix"]["version"] == metadata.version("dcm2niix")


def test_a_failed_job_writes_a_failed_record(tmp_path):
    from fusion3d.jobs import script_logging

    log = tmp_path / "x.log"
    with pytest.raises(RuntimeError), script_logging(log, rule="r"):
        raise RuntimeError("boom")
    assert json.loads(versions_path(log).read_text())["status"] == "failed"


def fake_record(rule: str, packages: dict, status: str = "ok") -> dict:
    return {
        "rule": rule,
        "status": status,
        "created": "2026-12-07T00:00:00+00:00",
        "python": {"version": "3.11.7", "executable": f"/envs/{rule}/bin/python"},
        "platform": "Linux",
        "fusion3d": {"version": "0.1.0"},
        "packages": packages,
        "package_data": {},
        "binaries": {},
        "torch": None,
    }


def write_record(logs, name: str, record: dict) -> None:
    log = logs / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    versions_path(log).write_text(json.dumps(record))


def test_provenance_gives_each_rule_the_environment_its_jobs_recorded(tmp_path):
    logs = tmp_path / "logs"
    write_record(logs, "preprocess/sub-1", fake_record("preprocess", {"torch": "2.13.0"}))
    write_record(logs, "preprocess/sub-2", fake_record("preprocess", {"antspyx": "0.6.3"}))
    write_record(logs, "viewer/viewer", fake_record("viewer", {"numpy": "2.3.5"}))
    write_record(logs, "figures/x", fake_record("figure_x", {"numpy": "2.4.0"}))
    # a record whose log is gone (its job no longer in the study's logs) is left out
    (logs / "old.versions.json").write_text(json.dumps(fake_record("old", {})))
    rules = collect_environments(logs)
    assert set(rules) == {"preprocess", "viewer", "figure_x"}
    assert rules["preprocess"]["jobs"] == 2
    assert rules["preprocess"]["packages"] == {"antspyx": "0.6.3", "torch": "2.13.0"}
    assert "torch" not in rules["viewer"]["packages"]
    assert rules["viewer"]["python"]["executable"] == "/envs/viewer/bin/python"
    out = write_provenance(
        tmp_path / "provenance.json", config={}, workflow_dir=tmp_path, inputs=[], logs_dir=logs
    )
    record = json.loads(out.read_text())
    assert record["rules"]["figure_x"]["packages"]["numpy"] == "2.4.0"
    assert record["rules"]["provenance"]["python"]["executable"] == sys.executable
    assert "packages" not in record  # no study-wide versions taken from the writing process


def test_jobs_of_one_rule_in_two_environments_show_both():
    merged = merge_rule_records(
        [fake_record("r", {"numpy": "2.3.5"}), fake_record("r", {"numpy": "2.4.0"}, "failed")]
    )
    assert merged["packages"]["numpy"] == ["2.3.5", "2.4.0"] and merged["failed_jobs"] == 1


def test_a_bad_record_is_named(tmp_path):
    (tmp_path / "a.log").write_text("")
    (tmp_path / "a.versions.json").write_text("{not json")
    with pytest.raises(ValueError, match="a.versions.json"):
        collect_environments(tmp_path)
