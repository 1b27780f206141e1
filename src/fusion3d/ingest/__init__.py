"""Ingest a LONI IDA download of ADNI: manifests, file location, conversion, selection, BIDS.

Formats read: DICOM (dcm2niix), NIfTI and ECAT 7 (nibabel; :mod:`fusion3d.ingest.ecat`).

The workflow calls :func:`read_manifests` at DAG-build time (it fails fast on a bad CSV) and
:func:`run_ingest` in the ingest rule; :func:`plan_ingest` does everything except conversion.

The names below are imported on first use, so that a light submodule (e.g.
:mod:`fusion3d.ingest.sources`, which the provenance and QC jobs read) costs no DICOM reader,
nipype or dcm2niix: those live in the ingest environment only.
"""

from __future__ import annotations

from fusion3d.lazy import lazy_getattr

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "REQUIRED_COLUMNS": "manifest",
    "IngestPlan": "run",
    "ManifestError": "manifest",
    "NoPairsError": "run",
    "plan_ingest": "run",
    "read_manifests": "manifest",
    "run_ingest": "run",
}

__all__ = sorted(_EXPORTS)


#: Import a name of :data:`_EXPORTS` from its submodule on first use.
__getattr__ = lazy_getattr(__name__, _EXPORTS)
