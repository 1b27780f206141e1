"""Tests of the synthetic ADNI-shaped cohort generator (fusion3d.synthetic)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from fusion3d.synthetic import cohort as cohort_mod
from fusion3d.synthetic import default_group_counts, generate_cohort, t1_grid_override
from fusion3d.synthetic.anatomy import (
    LABELS,
    T1Grid,
    _load_templates,
    _upsample2,
    draw_anatomy,
    template_space,
)
from fusion3d.synthetic.disease import HYPO_SCALE
from fusion3d.synthetic.geometry import (
    SmoothDisplacement,
    grid_affine,
    homogeneous,
    map_grid,
    rotation_matrix,
)
from fusion3d.synthetic.pet import fdg_uptake, pet_maps

SMALL_GRID = T1Grid(shape=(96, 96, 80), zooms=(2.5, 2.5, 2.4))
HEADER = '"Image Data ID","Subject","Group","Sex","Age","Visit","Modality","Description","Type","Acq Date","Format","Downloaded"'
DCM2NIIX = Path(sys.executable).parent / "dcm2niix"


def _generate(out: Path, **kwargs) -> pd.DataFrame:
    with t1_grid_override(SMALL_GRID):
        return generate_cohort(out, **kwargs)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("cohort")
    summary = _generate(out, n_subjects=2, seed=3, group_counts={"CN": 1, "AD": 1})
    return out, summary


def _collection(out: Path) -> pd.DataFrame:
    (csv_path,) = [p for p in (out / "download").glob("FUSION3D_SYNTHETIC_*.csv")]
    return pd.read_csv(csv_path, dtype=str)


def _truths(out: Path) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted((out / "truth").glob("*/truth.json"))
    }


def _series_folder(out: Path, image_id: str) -> Path:
    (folder,) = [p for p in (out / "download" / "ADNI").glob(f"*/*/*/{image_id}") if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def converted(cohort, tmp_path_factory) -> dict[str, Path]:
    """dcm2niix output of every cohort PET series, keyed by PTID."""
    out, _ = cohort
    result = {}
    for ptid, truth in _truths(out).items():
        dest = tmp_path_factory.mktemp(f"dcm2niix_{ptid}")
        cmd = [
            str(DCM2NIIX),
            "-z",
            "y",
            "-b",
            "y",
            "-o",
            str(dest),
            str(_series_folder(out, truth["pet_image_id"])),
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        (nii,) = sorted(dest.glob("*.nii.gz"))
        result[ptid] = nii
    return result


# --- geometry helpers ------------------------------------------------------------------


def test_rotation_is_proper():
    r = rotation_matrix([10.0, -7.0, 13.0])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)
    np.testing.assert_allclose(rotation_matrix([0, 0, 90]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_displacement_grid_matches_points_and_is_smooth():
    rng = np.random.default_rng(0)
    disp = SmoothDisplacement.random(rng)
    aff = grid_affine(np.eye(3)[:, [1, 2, 0]], (3.0, 2.0, 4.0), (7, 6, 5), [5.0, -3.0, 2.0])
    grid = disp.on_grid(aff, (7, 6, 5))
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (7, 6, 5)], indexing="ij"), -1).reshape(
        -1, 3
    )
    pts = ijk @ aff[:3, :3].T + aff[:3, 3]
    np.testing.assert_allclose(grid.reshape(-1, 3), disp.at_points(pts), atol=1e-4)
    # A few mm at most, and a Jacobian far from folding (|grad d| < 1).
    assert np.abs(disp.at_points(rng.uniform(-100, 100, (500, 3)))).max() < 8.0
    grad_bound = np.sum(
        np.linalg.norm(disp.amplitudes, axis=1) * np.linalg.norm(disp.wavevectors, axis=1)
    )
    assert grad_bound < 0.9


def test_map_grid_closed_form():
    aff = grid_affine(np.eye(3), (2.0, 2.0, 2.0), (4, 5, 6), [0.0, 0.0, 0.0])
    shift = homogeneous(np.eye(3), [2.0, -4.0, 6.0])
    coords = map_grid(aff, (4, 5, 6), shift, np.linalg.inv(aff))
    np.testing.assert_allclose(coords[:, 0, 0, 0], [1.0, -2.0, 3.0], atol=1e-5)
    field = np.zeros((4, 5, 6, 3), np.float32)
    field[..., 0] = 2.0
    coords = map_grid(aff, (4, 5, 6), shift, np.linalg.inv(aff), field)
    np.testing.assert_allclose(coords[:, 2, 3, 4], [2.0 + 2.0, 3.0 - 2.0, 4.0 + 3.0], atol=1e-5)


def test_displacement_without_affine_part():
    rng = np.random.default_rng(1)
    disp = SmoothDisplacement.random(rng, amplitude_mm=2.0, wavelength_mm=(80.0, 160.0))
    pts = rng.uniform(-70.0, 70.0, (3000, 3))
    flat = disp.without_affine_part(pts)
    design = np.c_[pts, np.ones(len(pts))]
    # Before: a sizeable affine component; after: none (least squares over the same points).
    before, *_ = np.linalg.lstsq(design, disp.at_points(pts), rcond=None)
    after, *_ = np.linalg.lstsq(design, flat.at_points(pts), rcond=None)
    assert np.abs(before).max() > 0.01
    np.testing.assert_allclose(after, 0.0, atol=1e-9)
    # The grid evaluation carries the affine term too.
    aff = grid_affine(np.eye(3)[:, [2, 0, 1]], (2.0, 3.0, 2.5), (6, 5, 7), [4.0, -8.0, 3.0])
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (6, 5, 7)], indexing="ij"), -1)
    world = ijk.reshape(-1, 3) @ aff[:3, :3].T + aff[:3, 3]
    grid = flat.on_grid(aff, (6, 5, 7)).reshape(-1, 3)
    np.testing.assert_allclose(grid, flat.at_points(world), atol=1e-3)


def test_draw_anatomy_ranges_and_trends():
    rng = np.random.default_rng(0)
    draws = {
        (g, sex, age): [draw_anatomy(rng, g, sex, age) for _ in range(150)]
        for g in ("CN", "AD")
        for sex in ("M", "F")
        for age in (65.0, 85.0)
    }
    volumes = [a.brain_volume_ml for v in draws.values() for a in v]
    assert 1000.0 <= min(volumes) and max(volumes) <= 1800.0  # the real adult range
    assert np.std(volumes) > 80.0  # subjects differ
    male = np.mean([a.brain_volume_ml for k, v in draws.items() if k[1] == "M" for a in v])
    female = np.mean([a.brain_volume_ml for k, v in draws.items() if k[1] == "F" for a in v])
    assert male > female + 80.0

    def mean(attr, group, age):
        return np.mean([getattr(a, attr) for s in "MF" for a in draws[(group, s, age)]])

    for attr in ("ventricle_dilation_mm", "cortical_thinning_mm"):
        assert mean(attr, "AD", 65.0) > mean(attr, "CN", 65.0)  # diagnosis
        assert mean(attr, "CN", 85.0) > mean(attr, "CN", 65.0)  # age
    for a in draws[("CN", "M", 65.0)][:20]:
        assert np.prod(a.shape) == pytest.approx(1.0)
        # The T1 -> MNI scaling brings the target volume to the template's.
        assert np.linalg.det(a.mni_scale(1883.0)) == pytest.approx(1883.0 / a.brain_volume_ml)
    with pytest.raises(ValueError):
        draw_anatomy(rng, "XX", "M", 70.0)


def test_upsample2_is_linear_on_a_ramp():
    fine = np.add.outer(np.add.outer(np.arange(9.0), 2 * np.arange(7.0)), np.arange(8.0)).astype(
        np.float32
    )
    up = _upsample2(fine[::2, ::2, ::2], fine.shape)
    assert up.shape == fine.shape
    np.testing.assert_allclose(up[:-1, :-1, :-1], fine[:-1, :-1, :-1], atol=1e-5)


def test_default_group_counts():
    assert default_group_counts(16) == {"CN": 8, "MCI": 4, "AD": 4}
    assert default_group_counts(2) == {"CN": 1, "MCI": 0, "AD": 1}
    assert default_group_counts(3) == {"CN": 1, "MCI": 1, "AD": 1}
    for n in range(1, 41):
        assert sum(default_group_counts(n).values()) == n


def test_default_t1_grid_is_sagittal_non_ras_and_small():
    grid = T1Grid()
    assert np.prod(grid.shape) <= 6_000_000
    aff = grid_affine(grid.axes, grid.zooms, grid.shape, [0, 0, 0])
    assert nib.aff2axcodes(aff) != ("R", "A", "S")
    assert nib.aff2axcodes(aff)[2] in ("R", "L")  # slices along left-right: sagittal


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_subjects": 0},
        {"n_subjects": -2},
        {"n_subjects": 2.5},
        {"n_subjects": True},
        {"seed": -1},
        {"seed": "x"},
        {"threads": 0},
        {"quirks": "yes"},
        {"n_subjects": 2, "group_counts": {"CN": 1, "XX": 1}},
        {"n_subjects": 2, "group_counts": {"CN": 3}},
        {"n_subjects": 2, "group_counts": {"CN": 3, "AD": -1}},
        {"n_subjects": 2, "group_counts": [1, 1]},
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_cohort(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x" / "download").exists()


def test_hypometabolism_spares_reference_regions():
    maps = pet_maps()
    assert maps.hypo[maps.reference].max() == 0.0
    assert maps.hypo.max() > 0.75  # region weights smoothed over the cortical ribbon
    space = template_space()
    healthy, ad = fdg_uptake(maps, 0.0), fdg_uptake(maps, 0.25)
    ref = maps.reference
    np.testing.assert_array_equal(healthy[ref], ad[ref])
    # Where H is largest (posterior cingulate / precuneus / parietal cortex): 1 - 0.25 H.
    ijk = np.unravel_index(int(np.argmax(maps.hypo)), maps.hypo.shape)
    y_mm = (space.affine @ [*ijk, 1.0])[1]
    assert -85.0 < y_mm < -20.0  # posterior half of the brain
    assert ad[ijk] / healthy[ijk] == pytest.approx(1.0 - 0.25 * maps.hypo[ijk], rel=1e-5)
    with pytest.raises(ValueError):
        fdg_uptake(maps, 1.5)


# --- the written cohort -------------------------------------------------------------------


def test_collection_csv_header_quoting_and_fields(cohort):
    out, _ = cohort
    assert not [p for p in out.rglob("*") if ".part" in p.name]  # no temporary leftovers
    names = sorted(p.name for p in (out / "download").glob("*.csv"))
    coll = [n for n in names if n.startswith("FUSION3D_SYNTHETIC_")]
    assert len(coll) == 1 and re.fullmatch(
        r"FUSION3D_SYNTHETIC_\d{1,2}_\d{1,2}_\d{4}\.csv", coll[0]
    )
    assert {"ADNIMERGE.csv", "cohort_image_ids.csv"} <= set(names)
    lines = (out / "download" / coll[0]).read_text().splitlines()
    assert lines[0] == HEADER
    for line in lines[1:]:
        assert re.fullmatch(r'"[^"]*"(,"[^"]*"){11}', line), line
    df = _collection(out)
    assert df["Image Data ID"].str.fullmatch(r"I\d+").all()
    assert df["Subject"].str.fullmatch(r"\d{3}_S_\d{4}").all()
    assert df["Acq Date"].str.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}").all()
    assert set(df["Modality"]) == {"MRI", "PET"}
    assert set(df["Format"]) <= {"DCM", "NiFTI"}
    assert set(df["Type"]) <= {"Original", "Processed"}
    assert df["Visit"].str.fullmatch(r"\d+").all()
    years = df["Acq Date"].str[-4:].astype(int)
    assert years.between(2006, 2013).all()
    assert df["Image Data ID"].is_unique


def test_tree_layout_and_file_names(cohort):
    out, summary = cohort
    df = _collection(out)
    assert len(summary) == len(df)
    for rec in df.itertuples(index=False):
        image_id = rec[0]
        ptid, desc = rec.Subject, rec.Description
        files = sorted((out / "download" / "ADNI" / ptid).rglob(f"*_{image_id}.*"))
        assert files, f"no file for {image_id}"
        folder = desc.replace(" ", "_").replace(";", "_")
        m, d, y = (int(v) for v in rec[9].split("/"))
        for f in files:
            rel = f.relative_to(out / "download" / "ADNI")
            parts = rel.parts
            assert parts[0] == ptid and parts[1] == folder
            assert re.fullmatch(rf"{y:04d}-{m:02d}-{d:02d}_\d\d_\d\d_\d\d\.0", parts[2])
            assert re.fullmatch(r"[IS]\d+", parts[3])
            kind = "br_raw" if rec.Type == "Original" else "Br"
            mod = "MR" if rec.Modality == "MRI" else "PT"
            ext = "nii" if rec.Format == "NiFTI" else "dcm"
            pattern = rf"ADNI_{ptid}_{mod}_{re.escape(folder)}_{kind}_\d{{17}}(_\d+)?_S\d+_{image_id}\.{ext}"
            assert re.fullmatch(pattern, parts[4]), parts[4]
        if rec.Format == "DCM":
            assert len(files) % 96 == 0
    assert not list(out.glob(".synthetic-partial-*"))


def test_cohort_ids_truth_and_group_counts(cohort):
    out, summary = cohort
    ids = (out / "download" / "cohort_image_ids.csv").read_text().strip().split(",")
    truths = _truths(out)
    assert len(ids) == 4 and all(re.fullmatch(r"I\d+", i) for i in ids)
    assert set(ids) == {t[k] for t in truths.values() for k in ("t1_image_id", "pet_image_id")}
    assert set(ids) == set(summary.loc[summary["in_cohort"], "image_id"])
    assert sorted(t["group"] for t in truths.values()) == ["AD", "CN"]
    for t in truths.values():
        mean, sd = HYPO_SCALE[t["group"]]  # clipped at 0 and 0.6, within 4 sd
        assert max(mean - 4 * sd, 0.0) <= t["hypometabolism_scale"] <= min(mean + 4 * sd, 0.6)
        assert t["seed"] == 3
        b = np.array(t["pet_to_t1_affine"])
        np.testing.assert_allclose(b[:3, :3] @ b[:3, :3].T, np.eye(3), atol=1e-9)  # rigid
        a = np.array(t["t1_to_mni_affine"])
        # A scales the subject's brain to the template's: det A = template mask / target volume.
        template_ml = (_template()["brain"] > 0.5).sum() / 1000.0
        target_ml = t["anatomy"]["brain_volume_target_ml"]
        assert abs(np.linalg.det(a[:3, :3])) == pytest.approx(template_ml / target_ml, rel=1e-3)


def test_quirks_present(cohort):
    out, summary = cohort
    df = _collection(out)
    descs = set(df["Description"])
    assert {"MPRAGE", "MPRAGE Repeat", "Co-registered Dynamic"} <= descs
    assert any(d.startswith("AV45 ") for d in descs)
    assert set(df.loc[df["Description"].isin(["MPRAGE", "MPRAGE Repeat"]), "Type"]) == {"Original"}
    fdg = df[df["Description"] == "Coreg, Avg, Std Img and Vox Siz, Uniform Resolution"]
    assert fdg["Visit"].nunique() == 2  # a follow-up FDG
    per_subject = df.groupby("Subject")["Modality"].apply(set)
    assert (per_subject == {"MRI"}).sum() == 1  # the extra subject: a T1 only
    assert df["Subject"].nunique() == 3
    merge = pd.read_csv(out / "download" / "ADNIMERGE.csv")
    assert list(merge.columns) == list(cohort_mod.ADNIMERGE_COLUMNS)
    assert set(merge["VISCODE"]) == {"bl", "m12"}
    assert set(merge["DX"]) <= {"CN", "MCI", "Dementia"}
    assert set(merge["PTID"]) == set(df["Subject"])
    # The dynamic series: 6 frames x 96 slices with frame timing.
    dyn = summary[summary["description"] == "Co-registered Dynamic"].iloc[0]
    assert dyn["n_files"] == 576
    files = sorted((out / dyn["path"]).glob("*.dcm"))
    ds = pydicom.dcmread(files[-1], stop_before_pixels=True)
    assert int(ds.NumberOfTimeSlices) == 6 and int(ds.ActualFrameDuration) == 300000
    assert float(ds.FrameReferenceTime) > 0


def test_no_quirks_cohort_is_only_pairs(tmp_path):
    summary = _generate(tmp_path, n_subjects=1, seed=5, quirks=False)
    assert sorted(summary["role"]) == ["fdg", "t1"]
    assert summary["in_cohort"].all()


def test_pet_dicom_headers(cohort):
    out, _ = cohort
    for ptid, truth in _truths(out).items():
        files = sorted(_series_folder(out, truth["pet_image_id"]).glob("*.dcm"))
        ds = pydicom.dcmread(files[0])
        assert ds.Modality == "PT"
        assert ds.SOPClassUID == pydicom.uid.PositronEmissionTomographyImageStorage
        assert ds.PatientID == ptid
        assert ds.SeriesDescription == truth["pet_description"]
        assert (ds.Rows, ds.Columns) == (160, 160)
        assert [float(v) for v in ds.PixelSpacing] == [1.5, 1.5]
        assert float(ds.SliceThickness) == 1.5
        assert (
            len({pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in files[:5]})
            == 1
        )


def test_dcm2niix_geometry_and_data(cohort, converted):
    out, _ = cohort
    for ptid, truth in _truths(out).items():
        img = nib.load(converted[ptid])
        data = np.asarray(img.dataobj, dtype=np.float32)
        assert data.shape[:3] == (160, 160, 96)
        # dcm2niix's voxel grid is our PET grid up to a permutation/flip of the indices.
        rel = np.linalg.inv(np.array(truth["pet_vox2world"])) @ img.affine
        np.testing.assert_allclose(np.abs(rel[:3, :3]).sum(axis=0), 1.0, atol=1e-4)
        np.testing.assert_allclose(rel[:3, 3], np.rint(rel[:3, 3]), atol=1e-3)
        files = sorted(_series_folder(out, truth["pet_image_id"]).glob("*.dcm"))
        first = pydicom.dcmread(files[0])
        slices = {}
        for f in files:
            ds = pydicom.dcmread(f)
            if int(ds.InstanceNumber) > 96:  # dynamic series: compare the first frame
                continue
            slices[tuple(float(v) for v in ds.ImagePositionPatient)] = ds.pixel_array * float(
                ds.RescaleSlope
            )
        # Rebuild the RAS world of DICOM pixel (col c, row r) of each slice and compare with dcm2niix.
        iop = np.array([float(v) for v in first.ImageOrientationPatient])
        ps = [float(v) for v in first.PixelSpacing]
        rng = np.random.default_rng(0)
        vol = data if data.ndim == 3 else data[..., 0]
        inv = np.linalg.inv(img.affine)
        for ipp, pix in list(slices.items())[::11]:
            for _ in range(20):
                r, c = rng.integers(20, 140, 2)
                lps = np.array(ipp) + c * ps[1] * iop[:3] + r * ps[0] * iop[3:]
                ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
                ijk = inv @ ras
                np.testing.assert_allclose(ijk[:3], np.rint(ijk[:3]), atol=1e-3)
                i, j, k = np.rint(ijk[:3]).astype(int)
                assert vol[i, j, k] == pytest.approx(pix[r, c], rel=1e-4, abs=1e-2)


def _template():
    return _load_templates()


def _sample(
    volume: np.ndarray, affine: np.ndarray, world: np.ndarray, order: int = 1
) -> np.ndarray:
    vox = (np.linalg.inv(affine) @ np.c_[world, np.ones(len(world))].T)[:3]
    return ndimage.map_coordinates(volume, vox, order=order, mode="constant", cval=0.0)


def _t1_to_mni(points: np.ndarray, truth_dir: Path, a: np.ndarray) -> np.ndarray:
    disp = nib.load(truth_dir / "t1_to_mni_displacement.nii.gz")
    field = np.asarray(disp.dataobj, dtype=np.float32)
    vox = (np.linalg.inv(disp.affine) @ np.c_[points, np.ones(len(points))].T)[:3]
    d = np.stack(
        [ndimage.map_coordinates(field[..., c], vox, order=1, mode="nearest") for c in range(3)], 1
    )
    return points @ a[:3, :3].T + a[:3, 3] + d


def _t1_corr(world, truth_dir, transform, tpl, values) -> float:
    """Correlation of T1 values with the template T1 at ``A x + d(x)``."""
    mni = _t1_to_mni(world, truth_dir, transform)
    return float(np.corrcoef(_sample(tpl["t1"], tpl["affine"], mni), values)[0, 1])


def _pet_corr(world, truth_dir, a, b, gm, gm_affine, values) -> float:
    """Correlation of PET values with (blurred) template GM at ``A (B y) + d(B y)``."""
    t1_world = world @ b[:3, :3].T + b[:3, 3]
    mni = _t1_to_mni(t1_world, truth_dir, a)
    return float(np.corrcoef(_sample(gm, gm_affine, mni), values)[0, 1])


def test_truth_maps_t1_onto_the_template(cohort):
    out, summary = cohort
    tpl = _template()
    for ptid, truth in _truths(out).items():
        t1_path = out / summary.loc[summary["image_id"] == truth["t1_image_id"], "path"].iloc[0]
        t1 = nib.load(t1_path)
        assert t1.get_data_dtype() == np.int16
        assert int(t1.header["qform_code"]) > 0 and int(t1.header["sform_code"]) > 0
        assert nib.aff2axcodes(t1.affine) != ("R", "A", "S")
        data = np.asarray(t1.dataobj, dtype=np.float32)
        mask_img = nib.load(out / "truth" / ptid / "t1_brainmask.nii.gz")
        np.testing.assert_allclose(mask_img.affine, t1.affine)
        mask = np.asarray(mask_img.dataobj) > 0
        idx = np.argwhere(mask)[:: max(1, int(mask.sum()) // 4000)]
        world = idx @ t1.affine[:3, :3].T + t1.affine[:3, 3]
        a = np.array(truth["t1_to_mni_affine"])

        values = data[tuple(idx.T)]
        good = _t1_corr(world, out / "truth" / ptid, a, tpl, values)
        shifted = homogeneous(np.eye(3), [0.0, 6.0, 0.0]) @ a
        wrong = _t1_corr(world, out / "truth" / ptid, shifted, tpl, values)
        # Inside the brain the subject has its own folding and atrophy (not the template's),
        # so the correlation is lower than a copy's; a 6 mm error still costs a clear drop.
        assert good > 0.55, good
        assert good - wrong > 0.1, (good, wrong)
        # The true brain mask is the template brain mask carried by the same mapping.
        mni_all = _t1_to_mni(world, out / "truth" / ptid, a)
        assert _sample(tpl["brain"], tpl["affine"], mni_all).mean() > 0.9


def test_truth_maps_dcm2niix_pet_onto_the_template(cohort, converted):
    out, _ = cohort
    tpl = _template()
    gm_blur = ndimage.gaussian_filter(tpl["gm"], sigma=3.0)
    for ptid, truth in _truths(out).items():
        img = nib.load(converted[ptid])
        pet = np.asarray(img.dataobj, dtype=np.float32)
        pet = pet if pet.ndim == 3 else pet.mean(axis=-1)
        rng = np.random.default_rng(1)
        idx = np.c_[
            rng.integers(10, 150, 6000), rng.integers(10, 150, 6000), rng.integers(5, 91, 6000)
        ]
        world = idx @ img.affine[:3, :3].T + img.affine[:3, 3]
        a = np.array(truth["t1_to_mni_affine"])
        b = np.array(truth["pet_to_t1_affine"])

        values = pet[tuple(idx.T)]
        tdir = out / "truth" / ptid
        good = _pet_corr(world, tdir, a, b, gm_blur, tpl["affine"], values)
        moved = b @ homogeneous(rotation_matrix([0.0, 0.0, 12.0]), [0.0, 0.0, 8.0])
        wrong = _pet_corr(world, tdir, a, moved, gm_blur, tpl["affine"], values)
        assert good > 0.8, good
        assert good - wrong > 0.1, (good, wrong)


def test_dynamic_series_converts_to_4d(cohort, tmp_path):
    out, summary = cohort
    dyn = summary[summary["role"] == "fdg_dynamic"].iloc[0]
    subprocess.run(
        [str(DCM2NIIX), "-z", "y", "-b", "y", "-o", str(tmp_path), str(out / dyn["path"])],
        check=True,
        capture_output=True,
    )
    (nii,) = tmp_path.glob("*.nii.gz")
    assert nib.load(nii).shape == (160, 160, 96, 6)


def test_deterministic_and_seed_dependent(cohort, tmp_path):
    out, _ = cohort
    again = tmp_path / "again"
    # Two worker processes must give the same bytes as the serial run.
    _generate(again, n_subjects=2, seed=3, group_counts={"CN": 1, "AD": 1}, threads=2)
    files_a = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix in (".csv", ".nii", ".gz", ".json") or rel.name.endswith("_1.dcm"):
            assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    _generate(other, n_subjects=1, seed=4, quirks=False)
    assert (other / "download" / "cohort_image_ids.csv").read_text() != (
        out / "download" / "cohort_image_ids.csv"
    ).read_text()


def test_failed_run_leaves_no_cohort(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(cohort_mod, "_write_tables", boom)
    with pytest.raises(RuntimeError):
        _generate(tmp_path, n_subjects=1, seed=0, quirks=False)
    assert not (tmp_path / "download").exists() and not (tmp_path / "truth").exists()
    assert not list(tmp_path.glob(".synthetic-partial-*"))


def test_existing_download_is_replaced(tmp_path):
    (tmp_path / "download").mkdir()
    (tmp_path / "download" / "stale.txt").write_text("old")
    _generate(tmp_path, n_subjects=1, seed=0, quirks=False)
    assert not (tmp_path / "download" / "stale.txt").exists()
    assert (tmp_path / "download" / "cohort_image_ids.csv").exists()
    shutil.rmtree(tmp_path / "download")


# --- individual anatomy ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def atrophy_cohort(tmp_path_factory) -> Path:
    """Three CN and three AD subjects (no quirks) on the small T1 grid."""
    out = tmp_path_factory.mktemp("atrophy")
    _generate(out, n_subjects=6, seed=11, group_counts={"CN": 3, "AD": 3}, quirks=False)
    return out


def _label_volumes(tdir: Path) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Volumes (ml) counted from the truth label file; also the labels and the mask."""
    img = nib.load(tdir / "t1_labels.nii.gz")
    labels = np.asarray(img.dataobj)
    mask = np.asarray(nib.load(tdir / "t1_brainmask.nii.gz").dataobj)
    voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
    vols = {name: float((labels == v).sum() * voxel_ml) for name, v in LABELS.items()}
    vols["brain"] = float((mask > 0).sum() * voxel_ml)
    return vols, labels, mask


def test_brain_volumes_in_the_real_range_and_differ(atrophy_cohort):
    truths = _truths(atrophy_cohort)
    volumes = []
    for ptid, truth in truths.items():
        vols, _, _ = _label_volumes(atrophy_cohort / "truth" / ptid)
        assert 1000.0 <= vols["brain"] <= 1800.0, (ptid, vols["brain"])
        # The rendered mask has about the drawn size (the displacement's volume change and
        # the small grid's partial voxels: a few %).
        target = truth["anatomy"]["brain_volume_target_ml"]
        assert vols["brain"] == pytest.approx(target, rel=0.06)
        for name in ("brain", "csf", "gm", "wm", "ventricles"):
            assert truth["volumes_ml"][name] == pytest.approx(vols[name], abs=0.01)
        # Parenchyma (GM + WM) below the mask: the mask holds CSF too.
        assert 850.0 < vols["gm"] + vols["wm"] < 0.95 * vols["brain"]
        volumes.append(vols["brain"])
    assert len(set(np.round(volumes))) == len(volumes)
    assert np.std(volumes) > 30.0


def test_ad_has_larger_ventricles_than_cn(atrophy_cohort):
    by_group: dict[str, list[float]] = {"CN": [], "AD": []}
    fraction: dict[str, list[float]] = {"CN": [], "AD": []}
    for ptid, truth in _truths(atrophy_cohort).items():
        vols, _, _ = _label_volumes(atrophy_cohort / "truth" / ptid)
        assert vols["ventricles"] > 5.0
        by_group[truth["group"]].append(vols["ventricles"])
        fraction[truth["group"]].append(vols["ventricles"] / vols["brain"])
    assert np.mean(by_group["AD"]) > np.mean(by_group["CN"])
    assert np.mean(fraction["AD"]) > np.mean(fraction["CN"])


def test_truth_labels_mask_and_mapping_are_exact(atrophy_cohort):
    tpl = _template()
    for ptid, truth in _truths(atrophy_cohort).items():
        tdir = atrophy_cohort / "truth" / ptid
        _, labels, mask = _label_volumes(tdir)
        np.testing.assert_array_equal(labels > 0, mask > 0)
        assert set(np.unique(labels)) <= set(LABELS.values())
        # The true mask is the template mask carried by A x + d(x) (recomputed here in float64).
        disp = nib.load(tdir / "t1_to_mni_displacement.nii.gz")
        field = np.asarray(disp.dataobj, dtype=np.float64)
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in mask.shape], indexing="ij"), -1)
        world = ijk.reshape(-1, 3) @ disp.affine[:3, :3].T + disp.affine[:3, 3]
        a = np.array(truth["t1_to_mni_affine"])
        mni = world @ a[:3, :3].T + a[:3, 3] + field.reshape(-1, 3)
        expected = _sample(tpl["brain"], tpl["affine"], mni) >= 0.5
        mismatch = np.count_nonzero(expected != (mask.ravel() > 0))
        assert mismatch <= 0.001 * mask.sum(), mismatch
        # d has no affine part over the brain (A stays the best affine), yet is not trivial.
        inside = mask.ravel() > 0
        design = np.c_[world[inside], np.ones(int(inside.sum()))]
        d_in = field.reshape(-1, 3)[inside]
        fit, *_ = np.linalg.lstsq(design, d_in, rcond=None)
        rms_affine = np.sqrt(((design @ fit) ** 2).sum(axis=1).mean())
        rms_field = np.sqrt((d_in**2).sum(axis=1).mean())
        assert rms_field > 1.0 and rms_affine < 0.2 * rms_field, (rms_affine, rms_field)
        # x -> A x + d(x) does not fold: det(A + grad d) > 0 at every brain voxel.
        grads = np.stack(np.gradient(field, axis=(0, 1, 2)), axis=-1)  # (..., 3 comps, 3 idx)
        jac = a[:3, :3] + grads[mask > 0] @ np.linalg.inv(disp.affine[:3, :3])
        assert np.linalg.det(jac).min() > 0.3
