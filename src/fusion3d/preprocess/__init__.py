"""Per-subject preprocessing of T1 MRI + FDG PET pairs (N4, brain extraction, MNI, SUVR, QC)."""

from fusion3d.preprocess.accuracy import accuracy_against_truth
from fusion3d.preprocess.pipeline import DEFAULT_OPTIONS, output_paths, preprocess_pair
from fusion3d.preprocess.qc import collect_qc
from fusion3d.preprocess.registration import ants_affine_to_ras, ras_to_ants_affine

__all__ = [
    "DEFAULT_OPTIONS",
    "accuracy_against_truth",
    "ants_affine_to_ras",
    "collect_qc",
    "output_paths",
    "preprocess_pair",
    "ras_to_ants_affine",
]
