"""Names of the per-subject preprocessing outputs: the one definition the rules and scripts read.

Every file of ``preprocess/<subject>/`` is ``<subject>_<suffix>``, ``<subject>`` being
``<participant>_<session>`` (:func:`fusion3d.subjects.subject_id`). :data:`SUFFIXES` maps
each output's key (the keys of :func:`output_paths`, and of the preprocess rule's
outputs) to its BIDS-style suffix. No heavy import here: the workflow reads it while it
builds the job graph.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Suffix of every per-subject preprocessing output, by key.
SUFFIXES: dict[str, str] = {
    "t1_mni": "space-MNI152_desc-preproc_T1w.nii.gz",
    "mask_mni": "space-MNI152_desc-brain_mask.nii.gz",
    "pet_mni": "space-MNI152_desc-suvr_pet.nii.gz",
    "t1_model": "desc-model_T1w.nii.gz",
    "pet_model": "desc-model_pet.nii.gz",
    "mask_model": "desc-model_mask.nii.gz",
    "xfm_t1_mni": "from-T1w_to-MNI152_mode-image_xfm.mat",
    "xfm_pet_t1": "from-pet_to-T1w_mode-image_xfm.mat",
    "xfm_t1_mni_warp": "from-T1w_to-MNI152_mode-image_xfm.nii.gz",
    "qc_json": "qc.json",
    "qc_png": "qc.png",
}

#: The model-grid inputs of training, inference and the baselines: MRI, PET, brain mask.
MODEL_KEYS: tuple[str, ...] = ("t1_model", "pet_model", "mask_model")
#: Written only when ``t1_to_mni`` is ``"syn"``: the T1 -> MNI warp field.
WARP_KEY = "xfm_t1_mni_warp"


def subject_file(out_dir: str | os.PathLike, subject_id: str, key: str) -> Path:
    """Path of one preprocessing output of ``subject_id`` (``key`` in :data:`SUFFIXES`)."""
    if key not in SUFFIXES:
        raise ValueError(f"unknown preprocessing output {key!r}; known: {sorted(SUFFIXES)}")
    return Path(out_dir) / f"{subject_id}_{SUFFIXES[key]}"


def output_paths(out_dir: str | os.PathLike, subject_id: str) -> dict[str, Path]:
    """Paths of every file :func:`fusion3d.preprocess.preprocess_pair` writes, by key."""
    return {key: subject_file(out_dir, subject_id, key) for key in SUFFIXES}
