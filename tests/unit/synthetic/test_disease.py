"""The disease model holds its calibration (fusion3d.synthetic.disease; docs/architecture.md).

Paired design: a typical CN, MCI and AD subject (every draw at its group's mean) built
from the same random stream (folding, texture, uptake variation) and age differ only by
the diagnosis's offsets, so a few pairs measure the model's group differences without the
spread between people: hippocampal volume 20-25 % below CN in AD
and 10-13 % in MCI; the FDG meta-ROI's uptake (over the pons and cerebellum, as SUVR)
15-20 % below CN in AD and 5-10 % in MCI.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fusion3d.synthetic.anatomy import (
    THINNING_MM,
    VENTRICLE_MM,
    draw_anatomy,
    individual_brain,
    template_space,
)
from fusion3d.synthetic.disease import (
    HYPO_SCALE,
    MTL_ATROPHY,
    REGIONAL_UPTAKE_VARIATION,
    SIGNATURE_THINNING_MM,
    draw_hypometabolism,
    draw_mtl_atrophy,
    meta_roi_mask,
)
from fusion3d.synthetic.pet import (
    fdg_uptake,
    hypometabolism_on_grid,
    pet_maps,
    reweight_hypometabolism,
    subject_pet_maps,
)

PAIRS = 3


def _typical(anatomy, group: str, age: float):
    """``anatomy`` with every disease-related draw at ``group``'s mean for ``age``."""
    trend = lambda t: t["at_60"] + t["per_year"] * (age - 60.0) + t.get(group, 0.0)  # noqa: E731
    return dataclasses.replace(
        anatomy,
        ventricle_dilation_mm=trend(VENTRICLE_MM),
        cortical_thinning_mm=trend(THINNING_MM),
        mtl_atrophy=draw_mtl_atrophy(group, age, 0.0, 0.0),
        signature_thinning_mm=SIGNATURE_THINNING_MM[group],
    )


@pytest.fixture(scope="module")
def measured():
    """Hippocampal volume (ml) and meta-ROI SUVR of each group, one row per pair."""
    space, maps = template_space(), pet_maps()
    roi = meta_roi_mask(space.shape, space.affine) & (space.gm > 0.3)
    out = {g: [] for g in ("CN", "MCI", "AD")}
    for pair in range(PAIRS):
        for group in out:
            rng = np.random.default_rng([11, pair])
            age = 65.0 + 7.0 * pair
            anatomy = _typical(draw_anatomy(rng, "CN", "F", age), group, age)
            brain = individual_brain(space, anatomy, rng)
            uptake = fdg_uptake(subject_pet_maps(maps, brain), draw_hypometabolism(group, 0.0))
            suvr = uptake[roi].mean() / uptake[maps.reference].mean()
            out[group].append((brain.structure_volumes_ml()["hippocampus"], suvr))
    return {g: np.asarray(v) for g, v in out.items()}


def _below_cn(measured, group: str, column: int) -> float:
    return float(np.mean(1.0 - measured[group][:, column] / measured["CN"][:, column]))


def test_hippocampal_volume_is_below_cn_by_the_literature_s_share(measured):
    assert 0.20 <= _below_cn(measured, "AD", 0) <= 0.25
    assert 0.10 <= _below_cn(measured, "MCI", 0) <= 0.13


def test_fdg_meta_roi_uptake_is_below_cn_by_the_literature_s_share(measured):
    assert 0.15 <= _below_cn(measured, "AD", 1) <= 0.20
    assert 0.05 <= _below_cn(measured, "MCI", 1) <= 0.10


def test_people_vary_so_that_the_groups_overlap(measured):
    """The spread between people is part of the model: CN hippocampal volumes vary by about
    10 % (ADNI's head-size-normalised coefficient of variation; most of it from the
    individual folding), every group's atrophy and hypometabolism have a spread, and a CN's
    hypometabolism can be above 0."""
    cn = measured["CN"][:, 0]
    assert cn.std(ddof=1) / cn.mean() > 0.08
    assert all(MTL_ATROPHY[k] > 0 for k in ("sd", "sd_MCI", "sd_AD"))
    assert all(sd > 0 for _, sd in HYPO_SCALE.values())
    assert draw_hypometabolism("CN", 1.5) > 0.0
    assert draw_mtl_atrophy("CN", 60.0, -10.0, 0.0) == 0.0  # clipped, never negative


def test_without_diagnosis_every_group_is_drawn_as_cn():
    """``diagnosis_effects: false`` draws every subject as CN (the cohort passes "CN")."""
    assert draw_hypometabolism("CN", 0.0) == HYPO_SCALE["CN"][0]
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a = draw_anatomy(rng_a, "CN", "M", 70.0)
    b = draw_anatomy(rng_b, "CN", "M", 70.0)
    assert a == b


def test_hypometabolism_on_a_grid_is_the_template_pattern():
    """benchmarks/bench_probe_draws.py re-weights preprocessed PET by ``H`` on the MNI grid:
    on the template's own grid it is ``H`` itself; on a 3 mm MNI grid it is high in the
    posterior cingulate / precuneus, zero in the pons, and the PET's blur spreads it."""
    space, maps = template_space(), pet_maps()
    same = hypometabolism_on_grid(space.shape, space.affine)
    np.testing.assert_allclose(same, maps.hypo, atol=1e-6)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = (-90.0, -126.0, -72.0)
    shape = (61, 73, 61)
    coarse = hypometabolism_on_grid(shape, affine)
    blurred = hypometabolism_on_grid(shape, affine, fwhm_mm=8.0)

    def at(volume, mm):
        i, j, k = np.rint(np.linalg.solve(affine, [*mm, 1.0])[:3]).astype(int)
        return float(volume[i, j, k])

    assert at(coarse, (0.0, -57.0, 33.0)) > 0.5  # precuneus / posterior cingulate
    assert at(coarse, (0.0, -27.0, -33.0)) == 0.0  # pons (an SUVR reference)
    assert blurred.max() < coarse.max()
    assert abs(blurred.sum() / coarse.sum() - 1.0) < 0.05


def test_reweighting_redraws_the_hypometabolism_scale():
    hypo = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    volume = np.array([[[2.0, 3.0, 4.0]]], np.float32)
    same = reweight_hypometabolism(volume, hypo, 0.3, 0.3)
    np.testing.assert_allclose(same, volume, rtol=1e-6)
    # the uptake of a subject drawn at 0.3, re-weighted to 0.1, is the uptake drawn at 0.1
    healthy = np.array([[[1.0, 2.0, 3.0]]], np.float32)
    at = lambda s: healthy * (1.0 - s * hypo)  # noqa: E731
    np.testing.assert_allclose(reweight_hypometabolism(at(0.3), hypo, 0.3, 0.1), at(0.1), rtol=1e-6)
    with pytest.raises(ValueError, match="new_scale must be in"):
        reweight_hypometabolism(volume, hypo, 0.3, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        reweight_hypometabolism(volume, hypo[..., :2], 0.3, 0.1)


def test_the_regional_uptake_variation_adds_a_field_of_its_rms_and_nothing_else():
    """``cohort.synthetic.regional_uptake_variation``: a finer part of the natural FDG variation,
    drawn last from the subject's stream, so the anatomy (T1, tissue) is the same with or
    without it, and rms 0 (or None) gives the brain of the cohorts before it."""
    space = template_space()

    def brain(regional):
        rng = np.random.default_rng([3, 1])
        return individual_brain(space, draw_anatomy(rng, "CN", "F", 70.0), rng, regional)

    without, with_field = brain(None), brain(REGIONAL_UPTAKE_VARIATION)
    np.testing.assert_array_equal(with_field.t1, without.t1)
    np.testing.assert_array_equal(with_field.labels, without.labels)
    field = with_field.uptake_variation - without.uptake_variation
    sigma, rms = REGIONAL_UPTAKE_VARIATION
    assert 0.8 * rms < field.std() < 1.2 * rms
    np.testing.assert_array_equal(brain((sigma, 0.0)).uptake_variation, without.uptake_variation)
