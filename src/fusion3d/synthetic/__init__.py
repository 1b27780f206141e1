"""Synthetic ADNI-shaped cohort: T1 MRI + FDG PET with known ground truth.

The public entry point is :func:`generate_cohort`, which writes a LONI IDA-shaped
download (collection CSV, ``ADNI/`` tree, ADNIMERGE.csv, cohort image IDs) and
the ground truth of every subject (true brain mask, T1 -> MNI mapping, PET -> T1
rigid transform, applied hypometabolism).

The names below are imported on first use: a submodule read elsewhere (e.g. the accuracy
check's ground truth) costs no generator (nilearn's templates, pydicom).
"""

from __future__ import annotations

import importlib

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "default_group_counts": "cohort",
    "generate_cohort": "cohort",
    "t1_grid_override": "cohort",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import ``name`` from its submodule on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fusion3d.synthetic' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fusion3d.synthetic.{_EXPORTS[name]}"), name)
