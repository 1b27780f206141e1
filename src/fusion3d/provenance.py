"""Provenance of a study: what code, which environments, which configuration, which inputs.

``provenance.json`` lets a reader of the results tell exactly what produced them: the project's
version and git commit (and whether the checkout had local changes), per rule the environment
its jobs ran in (interpreter, the versions of the packages they imported, the package data and
binaries they used, torch's CUDA and cuDNN), the resolved configuration (defaults filled in),
and SHA-256 checksums of the inputs (collection CSVs, ADNIMERGE, cohort list and every image
used).

Every job writes its own environment record beside its log (:func:`fusion3d.jobs.script_logging`,
``<log stem>.versions.json``); :func:`collect_environments` reads them under the study's
``logs/`` folder and merges them per rule. Versions are therefore those of the environment that
did the work, not of the process that writes this file, and a package a rule's environment
lacks is absent from that rule's entry.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
from pathlib import Path

from fusion3d import __version__
from fusion3d.io import atomic_path
from fusion3d.jobs import VERSIONS_SUFFIX, environment_record

#: Fields of a job's environment record that differ from job to job (not merged per rule).
JOB_FIELDS = ("rule", "status", "created")


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_state(directory: str | os.PathLike) -> dict:
    """Commit and dirtiness of the git checkout holding ``directory`` (``None`` outside git)."""

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _one_or_all(values: list) -> object:
    """The value when every job agrees, else every distinct value (sorted by their JSON)."""
    distinct = {json.dumps(v, sort_keys=True): v for v in values}
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    return [distinct[k] for k in sorted(distinct)]


def merge_rule_records(records: list[dict]) -> dict:
    """One rule's entry: its jobs' environment records merged (see :func:`collect_environments`)."""
    packages: dict[str, list[str]] = {}
    data: dict[str, set[str]] = {}
    for record in records:
        for dist, version in record.get("packages", {}).items():
            packages.setdefault(dist, []).append(version)
        for dist, files in record.get("package_data", {}).items():
            data.setdefault(dist, set()).update(files)
    return {
        "jobs": len(records),
        "failed_jobs": sum(r.get("status") != "ok" for r in records),
        "python": _one_or_all([r.get("python") for r in records]),
        "platform": _one_or_all([r.get("platform") for r in records]),
        "fusion3d": _one_or_all([r.get("fusion3d") for r in records]),
        "packages": {
            d: _one_or_all(v) for d, v in sorted(packages.items(), key=lambda kv: kv[0].lower())
        },
        "package_data": {d: sorted(f) for d, f in sorted(data.items())},
        "binaries": _one_or_all([r.get("binaries", {}) for r in records]),
        "torch": _one_or_all([r.get("torch") for r in records]),
    }


def collect_environments(logs_dir: str | os.PathLike) -> dict[str, dict]:
    """Rule -> the merged environment records of its jobs, from ``logs_dir/**/*.versions.json``.

    A rule's entry gives the number of jobs (and of failed ones), and each field as the one
    value all its jobs share, or the list of distinct values when they differ (e.g. jobs run
    in two environments). ``packages`` is the union of what its jobs imported, every
    distribution with its version (or versions). Records of jobs whose log is gone are left out;
    a job no longer in the study (e.g. of a method taken out of the config) keeps its record
    until its log is removed, and counts under its rule.

    Raises
    ------
    ValueError
        Naming a record that is not valid JSON or names no rule.
    """
    by_rule: dict[str, list[dict]] = {}
    for path in sorted(Path(logs_dir).rglob(f"*{VERSIONS_SUFFIX}")):
        if not path.with_suffix("").with_suffix(".log").is_file():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"provenance: {path}: not a readable environment record ({exc})"
            ) from exc
        if not isinstance(record, dict) or not record.get("rule"):
            raise ValueError(f"provenance: {path}: the environment record names no rule")
        by_rule.setdefault(record["rule"], []).append(record)
    return {rule: merge_rule_records(records) for rule, records in sorted(by_rule.items())}


def collect_provenance(
    *,
    config: dict,
    workflow_dir: str | os.PathLike,
    inputs: list[str | os.PathLike],
    image_paths: list[str | os.PathLike] = (),
    logs_dir: str | os.PathLike | None = None,
    rule: str = "provenance",
) -> dict:
    """Build the provenance record (see the module docstring).

    ``rules`` holds the environments of the jobs under ``logs_dir`` (none without it) and, under
    ``rule``, the environment of this process.
    """
    files: dict[str, str] = {}
    for path in list(inputs) + list(image_paths):
        path = Path(path)
        if path.is_file():
            files[str(path)] = sha256(path)
        elif path.is_dir():
            continue
        else:
            raise FileNotFoundError(f"provenance: input {path} does not exist")
    rules = collect_environments(logs_dir) if logs_dir is not None else {}
    rules[rule] = merge_rule_records([environment_record(rule=rule)])
    return {
        "project": "fusion3d",
        "version": __version__,
        "git": git_state(workflow_dir),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "rules": rules,
        "config": config,
        "inputs_sha256": files,
    }


def write_provenance(
    path: str | os.PathLike,
    *,
    config: dict,
    workflow_dir: str | os.PathLike,
    inputs: list[str | os.PathLike],
    pairs_tsv: str | os.PathLike | None = None,
    logs_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``provenance.json`` atomically; the images listed in ``pairs_tsv`` are checksummed
    too, and the jobs' environment records under ``logs_dir`` are merged per rule."""
    images: list[str] = []
    if pairs_tsv is not None:
        from fusion3d.subjects import read_pairs

        pairs = read_pairs(pairs_tsv)
        images = list(pairs["mri_path"]) + list(pairs["pet_path"])
    record = collect_provenance(
        config=config,
        workflow_dir=workflow_dir,
        inputs=list(inputs),
        image_paths=images,
        logs_dir=logs_dir,
    )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)
