"""Synthetic ADNI-shaped cohort: T1 MRI + FDG PET with known ground truth.

The public entry point is :func:`generate_cohort`, which writes a LONI IDA-shaped
download (collection CSV, ``ADNI/`` tree, ADNIMERGE.csv, cohort image IDs) and
the ground truth of every subject (true brain mask, T1 -> MNI mapping, PET -> T1
rigid transform, applied hypometabolism).
"""

from fusion3d.synthetic.cohort import default_group_counts, generate_cohort, t1_grid_override

__all__ = ["default_group_counts", "generate_cohort", "t1_grid_override"]
