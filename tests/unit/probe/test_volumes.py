"""Regional grey-matter volumes of the probe (fusion3d.probe.volumes): Atropos on a
three-tissue phantom gives each region's known GM volume, sees a 20 % loss in one region
only, gives the same numbers on a rerun, and the per-subject rows make a feature table."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fusion3d.io import load_nifti, save_nifti
from fusion3d.probe.atlas import atlas_on_grid, load_atlas
from fusion3d.probe.features import gather_rows, read_features, write_features
from fusion3d.probe.volumes import (
    TISSUES,
    regional_gm_volumes,
    segment_tissues,
    subject_gm_volumes,
    voxel_volume_ml,
)

#: Mean T1 intensity of each tissue of the phantom (scaled like a min-max scaled T1).
INTENSITY = {"csf": 0.2, "gm": 0.5, "wm": 0.9}
AFFINE = np.diag([1.5, 1.5, 1.5, 1.0])
EDGE = 40  # voxels a side
WIDTH = 10  # four regions: slabs of WIDTH voxels along x


def phantom(gm_rows, seed=0):
    """A WM cube with CSF on top and, in region r (a slab along x), ``gm_rows[r]`` rows of GM
    along y; Gaussian noise of sd 0.03. Returns ``(t1, labels)``; the region ids are 1..4."""
    t1 = np.full((EDGE, EDGE, EDGE), INTENSITY["wm"], np.float32)
    labels = np.zeros(t1.shape, np.int16)
    for r, rows in enumerate(gm_rows):
        labels[r * WIDTH : (r + 1) * WIDTH] = r + 1
        t1[r * WIDTH : (r + 1) * WIDTH, :rows] = INTENSITY["gm"]
    t1[:, EDGE - 4 :] = INTENSITY["csf"]
    t1 += np.random.default_rng(seed).normal(0.0, 0.03, t1.shape).astype(np.float32)
    return t1, labels


def known_ml(gm_rows):
    """The phantom's GM volume per region, ml."""
    return np.array(gm_rows, float) * WIDTH * EDGE * voxel_volume_ml(AFFINE)


IDS = np.arange(1, 5)
GM_ROWS = [8, 20, 24, 12]


def test_voxel_volume_ml():
    assert voxel_volume_ml(AFFINE) == pytest.approx(1.5**3 / 1000)
    rotated = np.eye(4)
    rotated[:3, :3] = [[0, -2, 0], [2, 0, 0], [0, 0, 1]]  # a rotation, 2 x 2 x 1 mm
    assert voxel_volume_ml(rotated) == pytest.approx(0.004)


def test_gm_volume_of_each_region_is_the_phantoms_within_one_percent():
    t1, labels = phantom(GM_ROWS)
    mask = np.ones(t1.shape, bool)
    volumes = regional_gm_volumes(t1, mask, AFFINE, labels, IDS)
    np.testing.assert_allclose(volumes, known_ml(GM_ROWS), rtol=0.01)
    # the posteriors come in TISSUES order (by intensity) and sum to 1 inside the mask
    probs = segment_tissues(t1, mask, AFFINE)
    assert probs.shape == (len(TISSUES), *t1.shape)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    tissue_of = np.argmax(probs, axis=0)
    for k, name in enumerate(TISSUES):
        assert abs(float(t1[tissue_of == k].mean()) - INTENSITY[name]) < 0.02


def test_gm_only_counts_inside_the_mask():
    t1, labels = phantom(GM_ROWS)
    mask = np.ones(t1.shape, bool)
    mask[:, :4] = False  # four GM rows of every region left out
    volumes = regional_gm_volumes(t1, mask, AFFINE, labels, IDS)
    np.testing.assert_allclose(volumes, known_ml([n - 4 for n in GM_ROWS]), rtol=0.01)


def test_a_20_percent_loss_in_one_region_lowers_that_region_only():
    t1, labels = phantom(GM_ROWS)
    shrunk_rows = list(GM_ROWS)
    shrunk_rows[1] = 16  # 20 -> 16 rows: 20 % of region 2's GM becomes WM
    shrunk, _ = phantom(shrunk_rows)
    mask = np.ones(t1.shape, bool)
    before = regional_gm_volumes(t1, mask, AFFINE, labels, IDS)
    after = regional_gm_volumes(shrunk, mask, AFFINE, labels, IDS)
    ratio = after / before
    assert ratio[1] == pytest.approx(0.8, abs=0.01)
    np.testing.assert_allclose(np.delete(ratio, 1), 1.0, atol=0.005)


def test_a_rerun_gives_the_same_numbers_and_leaves_no_file(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    t1, labels = phantom(GM_ROWS, seed=3)
    mask = np.ones(t1.shape, bool)
    first = regional_gm_volumes(t1, mask, AFFINE, labels, IDS)
    assert np.array_equal(first, regional_gm_volumes(t1, mask, AFFINE, labels, IDS))
    assert list(tmp_path.iterdir()) == []  # Atropos's probability images are gone
    assert tempfile.tempdir == str(tmp_path)


def mni_phantom(tmp_path, voxel_mm=6.0):
    """A coarse MNI-space T1 and mask: GM intensity in every atlas region, WM elsewhere in the
    brain box, CSF in a slab. Returns the paths and the expected ml per region."""
    atlas = load_atlas()
    shape = (30, 36, 30)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    labels = atlas_on_grid(atlas, shape, affine)
    t1 = np.where(labels > 0, INTENSITY["gm"], INTENSITY["wm"]).astype(np.float32)
    t1[:, :, :3] = INTENSITY["csf"]
    labels[:, :, :3] = 0
    t1 += np.random.default_rng(0).normal(0.0, 0.02, shape).astype(np.float32)
    mask = np.ones(shape, np.uint8)
    expected = np.array([(labels == i).sum() for i in atlas.ids]) * voxel_mm**3 / 1000.0
    save_nifti(t1, affine, tmp_path / "t1.nii.gz", dtype=np.float32)
    save_nifti(mask, affine, tmp_path / "mask.nii.gz", dtype=np.uint8)
    return tmp_path / "t1.nii.gz", tmp_path / "mask.nii.gz", expected


def test_subject_gm_volumes_is_one_row_of_atlas_regions_in_ml(tmp_path):
    t1_path, mask_path, expected = mni_phantom(tmp_path)
    row = subject_gm_volumes("sub-A_ses-M000", t1_path, mask_path)
    atlas = load_atlas()
    assert list(row.columns) == atlas.names and list(row.index) == ["sub-A_ses-M000"]
    np.testing.assert_allclose(row.iloc[0].to_numpy(), expected, rtol=0.02, atol=0.25)
    write_features(row, tmp_path / "sub-A.tsv")
    again = read_features(tmp_path / "sub-A.tsv")
    np.testing.assert_allclose(again.to_numpy(), row.to_numpy())
    assert list(again.index) == ["sub-A_ses-M000"]


def test_an_empty_mask_gives_nan_and_a_bad_grid_names_the_files(tmp_path, caplog):
    t1_path, mask_path, _ = mni_phantom(tmp_path)
    mask, affine = load_nifti(mask_path)
    save_nifti(np.zeros(mask.shape, np.uint8), affine, tmp_path / "empty.nii.gz")
    with caplog.at_level(logging.WARNING, logger="fusion3d"):
        row = subject_gm_volumes("sub-A_ses-M000", t1_path, tmp_path / "empty.nii.gz")
    assert row.isna().all(axis=None) and "empty brain mask" in caplog.text
    save_nifti(np.ones((30, 36, 31), np.uint8), affine, tmp_path / "other.nii.gz")
    with pytest.raises(ValueError, match=r"t1\.nii\.gz.*other\.nii\.gz"):
        subject_gm_volumes("sub-A_ses-M000", t1_path, tmp_path / "other.nii.gz")


def test_gather_rows_orders_subjects_and_names_the_missing_and_the_doubled():
    import pandas as pd

    rows = [
        pd.DataFrame({"r": [float(i)]}, index=pd.Index([f"s{i}"], name="subject_id"))
        for i in range(3)
    ]
    table = gather_rows(rows, ["s2", "s0"], "volumes")
    assert list(table.index) == ["s2", "s0"] and list(table["r"]) == [2.0, 0.0]
    with pytest.raises(ValueError, match=r"volumes: no row for 1 subject\(s\), e.g. \['s9'\]"):
        gather_rows(rows, ["s0", "s9"], "volumes")
    with pytest.raises(ValueError, match=r"volumes: subject\(s\) with two rows: \['s1'\]"):
        gather_rows(rows + rows[1:2], ["s0"], "volumes")
