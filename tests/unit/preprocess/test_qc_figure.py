"""The QC figure can show the failures it is for (pixel tests of the rendered PNG).

A deliberately bad brain mask must show as an outline off the head's brain (the outline is
drawn on the T1 before skull stripping), and a misregistered PET as a contour that moved
with it (the contour runs along the cortical ribbon, between the white matter's uptake and
the cortex's, as on real FDG where the white matter is above half the brain median).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fusion3d.preprocess import qc

N = 64
SHIFT = 10  # voxels along axis 1 (left-right in the sagittal panel)


def _ball(radius: float, shift: int = 0) -> np.ndarray:
    i, j, k = np.mgrid[:N, :N, :N]
    c = (N - 1) / 2
    return (i - c) ** 2 + (j - c - shift) ** 2 + (k - c) ** 2 <= radius**2


def _head():
    """Brain (radius 18) in a bright skull shell (radius 24-27): the T1 before stripping."""
    brain = _ball(18)
    head = np.where(brain, 0.5, 0.0) + np.where(_ball(27) & ~_ball(24), 1.0, 0.0)
    return brain, head.astype(np.float32)


def _pet(shift: int = 0) -> np.ndarray:
    """Real-FDG-like: a cortical ribbon (radius 14-18) at 1.2 SUVR around white matter at
    0.7 (above half the brain median, as on real FDG), over a noisy background of 0.074."""
    rng = np.random.default_rng(0)
    inner = _ball(14, shift)
    pet = np.where(_ball(18, shift), 1.2, 0.074) - np.where(inner, 0.5, 0.0)
    pet = pet + rng.normal(0, 0.03, (N, N, N))
    return np.clip(pet, 0, None).astype(np.float32)


def _render(tmp_path, name, mask, pet, head, brain) -> np.ndarray:
    t1 = np.where(mask, head, 0.0).astype(np.float32)  # skull-stripped with this mask
    path = qc.qc_figure(t1, mask, pet, head, tmp_path / f"{name}.png", title=name, head=head)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _panel(image: np.ndarray, row: int, col: int) -> np.ndarray:
    h, w = image.shape[0] // 3, image.shape[1] // 3
    return image[row * h + 20 : (row + 1) * h, col * w : (col + 1) * w]  # below the row title


def _coloured(panel: np.ndarray, colour: str) -> np.ndarray:
    r, g, b = panel[..., 0], panel[..., 1], panel[..., 2]
    if colour == "red":
        return (r > 180) & (g < 90) & (b < 90)
    return (r > 180) & (g > 180) & (b < 90)  # yellow


def _centre_x(pixels: np.ndarray) -> float:
    assert pixels.sum() > 20, "no contour drawn"
    cols = np.nonzero(pixels.any(axis=0))[0]
    return (cols.min() + cols.max()) / 2  # the middle of the outline's extent


def _width(pixels: np.ndarray) -> int:
    cols = np.nonzero(pixels.any(axis=0))[0]
    return int(cols.max() - cols.min())


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qc")
    brain, head = _head()
    good = _render(tmp, "good", brain, _pet(), head, brain)
    bad = _render(tmp, "bad", _ball(18, SHIFT), _pet(SHIFT), head, brain)
    small = _render(tmp, "small", _ball(10), _pet(), head, brain)
    return good, bad, small


def test_the_mask_outline_is_drawn_on_the_head_before_skull_stripping(figures):
    good, _, small = figures
    # the skull (value 1.0, white) is under the outline: over-stripping would show
    for image in (good, small):
        grey = _panel(image, 0, 0)
        assert ((grey > 240).all(axis=-1)).sum() > 200


def test_a_shifted_mask_moves_its_outline(figures):
    good, bad, _ = figures
    moved = _centre_x(_coloured(_panel(bad, 0, 0), "red")) - _centre_x(
        _coloured(_panel(good, 0, 0), "red")
    )
    scale = _panel(good, 0, 0).shape[1] / N  # pixels per voxel, at most
    assert 0.5 * SHIFT * scale < moved < 1.2 * SHIFT * scale


def test_an_under_sized_mask_draws_a_smaller_outline(figures):
    good, _, small = figures
    red_good, red_small = (_coloured(_panel(x, 0, 0), "red") for x in (good, small))
    assert _width(red_small) < 0.7 * _width(red_good)


def test_a_misregistered_pet_moves_its_contour(figures):
    good, bad, _ = figures
    yellow_good = _coloured(_panel(good, 1, 0), "yellow")
    yellow_bad = _coloured(_panel(bad, 1, 0), "yellow")
    scale = _panel(good, 1, 0).shape[1] / N
    moved = _centre_x(yellow_bad) - _centre_x(yellow_good)
    assert 0.5 * SHIFT * scale < moved < 1.2 * SHIFT * scale


def test_the_pet_contour_follows_the_brain_not_the_background(figures):
    good, _, _ = figures
    yellow = _coloured(_panel(good, 1, 0), "yellow")
    red = _coloured(_panel(good, 0, 0), "red")
    # one closed contour around the brain, as wide as the brain's outline (noise would add
    # scattered contours all over the panel)
    assert abs(_width(yellow) - _width(red)) <= 0.1 * _width(red)
    assert abs(_centre_x(yellow) - _centre_x(red)) < 3


def test_pet_contour_level_lies_between_white_matter_and_cortex():
    brain, _ = _head()
    _, level = qc.pet_contour_level(_pet(), brain, voxel_mm=1.5)
    assert 0.8 < level < 1.15  # between the white matter's 0.7 and the cortex's 1.2
    # the former level, 50 % of the brain median, fell below the white matter: outline only
    assert level > 0.5 * np.median(_pet()[brain]) + 0.2
    _, empty = qc.pet_contour_level(np.zeros((N, N, N), np.float32), brain)
    assert empty == 0.5


def test_the_pet_contour_traces_the_cortex_inside_the_brain(figures):
    good, _, _ = figures
    # the contour also runs along the ribbon's inner edge (cortex against white matter):
    # yellow pixels well inside the brain's outline, which an outline-only contour lacks
    yellow = _coloured(_panel(good, 1, 0), "yellow")
    rows, cols = np.nonzero(yellow)
    cy, cx = rows.mean(), _centre_x(yellow)
    radius = np.hypot(rows - cy, cols - cx)
    assert (radius < 0.85 * radius.max()).sum() > 0.25 * len(radius)


def test_a_5_mm_shift_changes_the_pet_contour_measurably(tmp_path):
    brain, head = _head()
    voxel_mm, shift = 1.0, 5  # 5 voxels of 1 mm
    before = qc.pet_contour_slices(_pet(), brain, voxel_mm)
    after = qc.pet_contour_slices(_pet(shift), brain, voxel_mm)
    for axis in (0, 2):  # the sagittal and axial panels see a shift along axis 1
        a, b = before[axis], after[axis]
        changed = (a ^ b).sum() / (a | b).sum()
        assert changed > 0.3, f"panel {axis}: only {changed:.2f} of the contour area changed"
    # and in the rendered picture: the yellow pixels of the PET row move
    t1 = np.where(brain, head, 0.0).astype(np.float32)
    pics = [
        np.asarray(
            Image.open(
                qc.qc_figure(t1, brain, pet, head, tmp_path / f"{n}.png", head=head, voxel_mm=1.0)
            ).convert("RGB")
        ).astype(int)
        for n, pet in (("a", _pet()), ("b", _pet(shift)))
    ]
    ya, yb = (_coloured(_panel(p, 1, 0), "yellow") for p in pics)
    assert (ya ^ yb).sum() > 0.5 * min(ya.sum(), yb.sum())
