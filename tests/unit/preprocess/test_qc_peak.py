"""The PET -> T1 peak check (issue 38): correct poses pass on noisy PET, 5 mm off are caught.

The anatomy is nilearn's MNI152 template (tests/fixtures_preprocess.py): the T1 brain, and a
PET of its grey and white matter at 8 mm FWHM with the realistic mode's Poisson-like noise
(:func:`fusion3d.synthetic.pet.add_realistic_noise`), both at the pipeline's 3 mm. The PET is
in place, so the identity is the correct pose.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import nibabel as nib
import numpy as np
import pytest
from fixtures_preprocess import _mni_volumes  # noqa: E402
from scipy import ndimage

from fusion3d.preprocess import qc, qc_peak, registration
from fusion3d.synthetic.pet import RealisticPet, add_realistic_noise

#: (noise, reconstruction FWHM mm): issue 38's calibration at 3 mm, and the default realistic PET
NOISES = (
    (0.064, 3.0),
    (0.12, 3.0),
    (0.18, 3.0),
    (RealisticPet().noise, RealisticPet().recon_fwhm_mm),
)


@pytest.fixture(scope="module")
def head():
    vols, affine = _mni_volumes()
    brain = nib.Nifti1Image(vols["t1"] * vols["mask"], affine)
    mask = nib.Nifti1Image(vols["mask"], affine)
    fixed = registration.resample_to_resolution(registration.nib_to_ants(brain), 3.0)
    mask3 = registration.resample_to_resolution(registration.nib_to_ants(mask), 3.0).numpy() > 0.5
    # the fixture's PET is at 6 mm FWHM: widen to 8 mm before the noise (PSF part)
    model = RealisticPet(noise=0.12, fwhm_mm=8.0)
    extra = np.sqrt(max(model.psf_fwhm_mm**2 - 6.0**2, 0.0)) / 2.355
    clean = ndimage.gaussian_filter(vols["pet"], extra)
    return fixed, mask3, clean, affine


def _pet(head, noise: tuple[float, float], seed: int):
    _, _, clean, affine = head
    rng = np.random.default_rng(seed)
    model = RealisticPet(noise=noise[0], recon_fwhm_mm=noise[1])
    noisy = add_realistic_noise(clean, rng, model, voxel_mm=1.0)
    image = registration.nib_to_ants(nib.Nifti1Image(noisy, affine))
    return registration.resample_to_resolution(image, 3.0)


def test_parabola_offset():
    # MI peaked at +1 mm: scores of a parabola with vertex 1
    f = lambda x: 1.0 - 0.01 * (x - 1.0) ** 2  # noqa: E731
    assert qc_peak.parabola_offset(f(-3), f(0), f(3), 3.0) == pytest.approx(1.0)
    assert qc_peak.parabola_offset(0.5, 0.4, 0.5, 3.0) == float("inf")  # a dip, not a peak


@pytest.mark.parametrize("noise", NOISES)
def test_correct_pose_passes_and_5_mm_is_caught_on_noisy_pet(head, noise):
    fixed, mask, _, _ = head
    bound = qc.DEFAULT_BOUNDS["max_pet_peak_offset_mm"]
    centre = qc_peak.mask_centre(fixed, mask)
    for seed in range(2):
        pet = _pet(head, noise, seed)
        good = qc_peak.peak_check(fixed, pet, None, mask)
        assert good["peak_offset_mm"] <= bound, good
        assert good["best_neighbour_gain"] < 0
        for direction in np.eye(3)[seed::2]:
            move = qc_peak.move_transform(np.eye(3), 5.0 * direction, centre)
            off = qc_peak.peak_check(fixed, pet, move, mask)
            assert off["peak_offset_mm"] > bound, (direction, off)


def test_the_off_peak_flag_names_figure_value_and_bound():
    peak = {"peak_offset_mm": 4.2, "shift_mm": [3.9, 0.1, 0.0], "turn_deg": [0.2, 0.0, 0.1]}
    record = {
        "mask_volume_ml": 1400.0,
        "registration": {
            "t1_to_mni": {"similarity_before": 0.3, "similarity_after": 0.6},
            "pet_to_t1": {"similarity_before": 0.05, "similarity_after": 0.09, "peak": peak},
        },
        "suvr": {"reference_value": 1.0, "reference_voxels": 500},
    }
    flags = qc.evaluate_flags(record, qc.DEFAULT_BOUNDS)
    assert [f["flag"] for f in flags] == ["pet_to_t1_off_peak"]
    assert flags[0]["figure"] == "pet_to_t1_peak_offset_mm" and flags[0]["value"] == 4.2
    assert flags[0]["bound"] == "<= 2"
    # a real FDG's mutual information (0.065-0.11 nats at the true pose) is no failure
    peak["peak_offset_mm"] = 0.4
    assert qc.evaluate_flags(record, qc.DEFAULT_BOUNDS) == []
