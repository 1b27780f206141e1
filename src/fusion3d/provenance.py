"""Provenance of a study: what code, which packages, which configuration, which inputs.

``provenance.json`` lets a reader of the results tell exactly what produced them: the project's
version and git commit (and whether the checkout had local changes), the versions of the packages
that compute anything, the resolved configuration (defaults filled in), and SHA-256 checksums of the
inputs (collection CSVs, ADNIMERGE, cohort list and every image used).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from fusion3d import __version__
from fusion3d.io import atomic_path

PACKAGES = (
    "torch",
    "monai",
    "numpy",
    "scipy",
    "pandas",
    "nibabel",
    "nilearn",
    "scikit-image",
    "pydicom",
    "dcm2niix",
    "nipype",
    "antspyx",
    "deepbet",
    "PyWavelets",
    "matplotlib",
    "snakemake",
    "snakemake-executor-plugin-slurm",
)


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


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when a package is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def collect_provenance(
    *,
    config: dict,
    workflow_dir: str | os.PathLike,
    inputs: list[str | os.PathLike],
    image_paths: list[str | os.PathLike] = (),
) -> dict:
    """Build the provenance record (see the module docstring)."""
    files: dict[str, str] = {}
    for path in list(inputs) + list(image_paths):
        path = Path(path)
        if path.is_file():
            files[str(path)] = sha256(path)
        elif path.is_dir():
            continue
        else:
            raise FileNotFoundError(f"provenance: input {path} does not exist")
    return {
        "project": "fusion3d",
        "version": __version__,
        "git": git_state(workflow_dir),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
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
) -> Path:
    """Write ``provenance.json`` atomically; the images listed in ``pairs_tsv`` are checksummed too."""
    images: list[str] = []
    if pairs_tsv is not None:
        from fusion3d.subjects import read_pairs

        pairs = read_pairs(pairs_tsv)
        images = list(pairs["mri_path"]) + list(pairs["pet_path"])
    record = collect_provenance(
        config=config, workflow_dir=workflow_dir, inputs=list(inputs), image_paths=images
    )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)
