"""Per-subject preprocessing of T1 MRI + FDG PET pairs (N4, brain extraction, MNI, SUVR, QC).

The names below are imported on first use, so that reading
:mod:`fusion3d.preprocess.outputs` (the workflow does while it builds the job graph)
does not load ANTsPy.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    """Import ``name`` from its submodule on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fusion3d.preprocess' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fusion3d.preprocess.{_EXPORTS[name]}"), name)
