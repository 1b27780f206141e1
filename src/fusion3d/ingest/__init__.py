"""Ingest a LONI IDA download of ADNI: manifests, file location, conversion, selection, BIDS.

Formats read: DICOM (dcm2niix), NIfTI and ECAT 7 (nibabel; :mod:`fusion3d.ingest.ecat`).

The workflow calls :func:`read_manifests` at DAG-build time (it fails fast on a bad CSV) and
:func:`run_ingest` in the ingest rule; :func:`plan_ingest` does everything except conversion.
"""

from fusion3d.ingest.manifest import REQUIRED_COLUMNS, ManifestError, read_manifests
from fusion3d.ingest.run import IngestPlan, NoPairsError, plan_ingest, run_ingest

__all__ = [
    "REQUIRED_COLUMNS",
    "IngestPlan",
    "ManifestError",
    "NoPairsError",
    "plan_ingest",
    "read_manifests",
    "run_ingest",
]
