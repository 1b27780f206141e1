"""Where a study's cohort comes from: the configured LONI IDA download (:func:`cohort_inputs`),
a BIDS dataset (:func:`bids_inputs`) or the synthetic rule's ``cohort.json``
(:func:`read_cohort_spec`). Light (the standard library only): the workflow's driver calls
these while it builds the DAG."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path


def cohort_inputs(config: dict) -> dict:
    """Resolve the cohort inputs of a validated ``adni`` configuration.

    Returns a dict with ``download_dir``, ``manifests`` (sorted list of existing CSVs),
    ``adnimerge`` and ``image_ids`` (``None`` when not configured).

    Raises
    ------
    ValueError
        Naming the configuration key when a required key is missing or matches no file.
    """
    cohort = config["cohort"]
    if cohort.get("source") != "adni":
        raise ValueError("cohort_inputs() is for cohort.source: adni")
    download = cohort.get("download_dir")
    if not download:
        raise ValueError("config key cohort.download_dir is required when cohort.source is adni")
    if not Path(download).is_dir():
        raise ValueError(f"config key cohort.download_dir: {download} is not a folder")
    patterns = cohort.get("manifests") or []
    if not patterns:
        raise ValueError("config key cohort.manifests is required when cohort.source is adni")
    manifests: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if not found:
            raise ValueError(f"config key cohort.manifests: {pattern} matches no file")
        manifests.extend(found)
    result = {
        "download_dir": download,
        "manifests": sorted(dict.fromkeys(manifests)),
        "adnimerge": cohort.get("adnimerge"),
        "image_ids": cohort.get("image_ids"),
    }
    for key in ("adnimerge", "image_ids"):
        if result[key] and not Path(result[key]).is_file():
            raise ValueError(f"config key cohort.{key}: {result[key]} does not exist")
    return result


def read_cohort_spec(path: str | os.PathLike) -> dict:
    """Read the ``cohort.json`` written by the synthetic rule (same keys as :func:`cohort_inputs`)."""
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    for key in ("download_dir", "manifests"):
        if key not in spec:
            raise ValueError(f"{path}: missing key {key!r}")
    return spec


class BidsInputError(ValueError):
    """The BIDS dataset cannot be read as a study (a one-line message naming file and problem)."""


def bids_inputs(config: dict) -> dict:
    """The ingest rule's inputs for ``cohort.source: bids``: the dataset's description file.

    Raises
    ------
    BidsInputError
        Naming ``cohort.bids_dir`` when it is not set, not a folder, or lacks
        ``dataset_description.json``.
    """
    folder = config["cohort"].get("bids_dir")
    if not folder:
        raise BidsInputError("config key cohort.bids_dir is required when cohort.source is bids")
    return {"bids_description": str(bids_description_file(folder))}


def bids_description_file(folder: str | os.PathLike) -> Path:
    """``<folder>/dataset_description.json``, checked to exist."""
    if not Path(folder).is_dir():
        raise BidsInputError(f"config key cohort.bids_dir: {folder} is not a folder")
    path = Path(folder) / "dataset_description.json"
    if not path.is_file():
        raise BidsInputError(f"{path}: missing; cohort.bids_dir must be the root of a BIDS dataset")
    return path
