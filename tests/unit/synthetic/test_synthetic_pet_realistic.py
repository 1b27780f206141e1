"""The realistic FDG mode of the synthetic PET (issue 33 point 2): off when the library is
called without it, on by the workflow's default, and then issue 33's statistics (contrast,
noise, smoothness) land in real FDG's measured ranges."""

from __future__ import annotations

import numpy as np
import pytest

from fusion3d.synthetic import cohort as C
from fusion3d.synthetic.disease import REGIONAL_UPTAKE_VARIATION
from fusion3d.synthetic.geometry import grid_affine, homogeneous, rigid_part, rotation_matrix
from fusion3d.synthetic.pet import (
    PET_AXES,
    PET_SHAPE,
    PET_VOXEL_MM,
    RealisticPet,
    pet_maps,
    realistic_pet_model,
    subject_pet_maps,
)
from fusion3d.synthetic.petstats import REAL_FDG_RANGES, pet_statistics


def test_the_mode_is_off_unless_asked_and_checks_its_keys():
    assert realistic_pet_model(None) is None
    assert realistic_pet_model({}) is None
    assert realistic_pet_model({"realistic": False, "noise": 0.5}) is None
    model = realistic_pet_model({"realistic": True, "noise": 0.1, "fwhm_mm": 8})
    assert model == RealisticPet(noise=0.1, fwhm_mm=8.0)
    assert model.psf_fwhm_mm == pytest.approx(np.sqrt(64 - model.recon_fwhm_mm**2))
    with pytest.raises(ValueError, match="unknown keys"):
        realistic_pet_model({"realistic": True, "nois": 0.1})
    with pytest.raises(ValueError, match="recon_fwhm_mm"):
        RealisticPet(fwhm_mm=3.0, recon_fwhm_mm=4.0)
    with pytest.raises(ValueError, match="noise"):
        RealisticPet(noise=0.0)


@pytest.fixture(scope="module")
def subject():
    plan = C._plan_cohort(2, 0, C.default_group_counts(2), False, True)[0]
    plan.regional_variation = REGIONAL_UPTAKE_VARIATION  # as the workflow draws it
    anatomy, brain = C._subject_anatomy(plan, 0)
    rng = np.random.default_rng([0, 2, plan.index])
    pose = C._draw_t1_pose(rng, C._t1_grid, anatomy)
    maps = subject_pet_maps(pet_maps(), brain)
    pet_to_t1 = homogeneous(
        rigid_part(pose.t1_to_mni).T @ rotation_matrix((2.0, -3.0, 1.0)), (4, -2, 6)
    )
    centre = np.linalg.inv(pet_to_t1) @ np.linalg.inv(pose.t1_to_mni) @ np.r_[C.BRAIN_CENTER_MNI, 1]
    affine = grid_affine(PET_AXES, (PET_VOXEL_MM,) * 3, PET_SHAPE, centre[:3])
    return plan, pose, maps, pet_to_t1, affine


def _volume(subject, model):
    plan, pose, maps, pet_to_t1, affine = subject
    plan.pet_model = model
    im = plan.image("fdg")
    vol, *_ = C._pet_volume(plan, im, pose, maps, pet_to_t1, affine, 7.0, np.random.default_rng(1))
    return vol


def test_realistic_pet_lands_in_real_fdg_ranges(subject):
    default = pet_statistics(_volume(subject, None))
    real = pet_statistics(_volume(subject, RealisticPet()))
    lo, hi = REAL_FDG_RANGES["noise_hf_over_median"]
    assert default["noise_hf_over_median"] < lo  # the default PET is too clean (issue 33)
    assert lo <= real["noise_hf_over_median"] <= hi
    assert real["noise_hf_over_median"] == pytest.approx(RealisticPet().noise, rel=0.2)
    lo, hi = REAL_FDG_RANGES["contrast_p95_p50"]
    assert default["contrast_p95_p50"] < lo
    assert lo <= real["contrast_p95_p50"] <= hi
    lo, hi = REAL_FDG_RANGES["fwhm_mm"]
    assert lo <= real["fwhm_mm"] <= hi
