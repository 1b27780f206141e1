"""Ingest a LONI IDA download of ADNI: manifests, file location, conversion, selection, BIDS.

Formats read: DICOM (dcm2niix), NIfTI and ECAT 7 (nibabel; :mod:`fusion3d.ingest.ecat`).

The workflow calls :func:`read_manifests` at DAG-build time (it fails fast on a bad CSV) and
:func:`run_ingest` in the ingest rule; :func:`plan_ingest` does everything except conversion.
The names of :mod:`.run` (conversion: pydicom, nibabel) are imported on first use, so that
the driver (a Snakemake-only environment, ``envs/snakemake.yaml``) reads the manifests
without the imaging stack.
"""

from importlib import import_module

from fusion3d.ingest.manifest import REQUIRED_COLUMNS, ManifestError, read_manifests

__all__ = [
    "REQUIRED_COLUMNS",
    "IngestPlan",
    "ManifestError",
    "NoPairsError",
    "plan_ingest",
    "read_manifests",
    "run_ingest",
]

_FROM_RUN = ("IngestPlan", "NoPairsError", "plan_ingest", "run_ingest")


def __getattr__(name: str):
    """The names of :mod:`fusion3d.ingest.run`, imported on first use."""
    if name in _FROM_RUN:
        return getattr(import_module("fusion3d.ingest.run"), name)
    raise AttributeError(f"module 'fusion3d.ingest' has no attribute {name!r}")
