"""Per-subject preprocessing of T1 MRI + FDG PET pairs (N4, brain extraction, MNI, SUVR, QC).

The names below are imported on first use, so that reading
:mod:`fusion3d.preprocess.outputs` (the workflow does while it builds the job graph)
does not load ANTsPy.
"""

from __future__ import annotations

from fusion3d.lazy import lazy_getattr

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "DEFAULT_OPTIONS": "pipeline",
    "accuracy_against_truth": "accuracy",
    "ants_affine_to_ras": "registration",
    "collect_qc": "qc",
    "output_paths": "outputs",
    "preprocess_pair": "pipeline",
    "ras_to_ants_affine": "registration",
}

__all__ = sorted(_EXPORTS)


#: Import a name of :data:`_EXPORTS` from its submodule on first use.
__getattr__ = lazy_getattr(__name__, _EXPORTS)
