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
    SIGNATURE_THINNING_MM,
    draw_hypometabolism,
    draw_mtl_atrophy,
    meta_roi_mask,
)
from fusion3d.synthetic.pet import fdg_uptake, pet_maps, subject_pet_maps

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
