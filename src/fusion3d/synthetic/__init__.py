"""Synthetic ADNI-shaped cohort: T1 MRI + FDG PET with known ground truth.

The public entry point is :func:`generate_cohort`, which writes a LONI IDA-shaped
download (collection CSV, ``ADNI/`` tree, ADNIMERGE.csv, cohort image IDs) and
the ground truth of every subject (true brain mask, T1 -> MNI mapping, PET -> T1
rigid transform, applied hypometabolism).

The names below are imported on first use: a submodule read elsewhere (e.g. the accuracy
check's ground truth) costs no generator (nilearn's templates, pydicom).
"""

from __future__ import annotations

from fusion3d.lazy import lazy_getattr

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "default_group_counts": "cohort",
    "generate_cohort": "cohort",
    "t1_grid_override": "cohort",
}

__all__ = sorted(_EXPORTS)


#: Import a name of :data:`_EXPORTS` from its submodule on first use.
__getattr__ = lazy_getattr(__name__, _EXPORTS)
