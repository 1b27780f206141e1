"""Ingest a LONI IDA download of ADNI: manifests, file location, conversion, selection, BIDS.

The workflow calls :func:`read_manifests` at DAG-build time (it fails fast on a bad CSV) and
:func:`run_ingest` in the ingest rule; :func:`plan_ingest` does everything except conversion.
"""

from fusion3d.ingest.manifest import REQUIRED_COLUMNS, ManifestError, read_manifests
from fusion3d.ingest.run import IngestPlan, plan_ingest, run_ingest

__all__ = [
    "REQUIRED_COLUMNS",
    "IngestPlan",
    "ManifestError",
    "plan_ingest",
    "read_manifests",
    "run_ingest",
]
