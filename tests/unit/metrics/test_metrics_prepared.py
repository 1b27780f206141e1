"""The prepared path (source-side work once per subject) against the direct formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from fusion3d.evaluation.scoring import evaluate_method, evaluate_methods
from fusion3d.io import save_nifti
from fusion3d.metrics import PROTOCOLS, compute_metrics, suite
from fusion3d.metrics import prepared as prep
from fusion3d.metrics.protocols import direct_metrics

RTOL = 1e-9
#: Metrics computed in float32 in both paths (the textbook FSIM's phase congruency, the
#: volume SSIM's 3D Gaussian moments): the prepared path sums float32 terms in another
#: order (FFTW, compiled loops), so they agree to float32 round-off (the issue's bound on
#: any value is 1e-6).
RTOL_FLOAT32 = 3e-7
FLOAT32_METRICS = {("paper", "fsim_zhang"), ("volume", "fsim_zhang"), ("volume", "ssim")}


def _head(shape=(32, 28, 12), seed=0):
    """A small head: smooth blob "MRI" with zero background, blurred "PET", a mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(axis=0) < 0.7
    mri = np.where(inside, ndimage.gaussian_filter(rng.random(shape), 1.0), 0.0)
    mri = mri / mri.max()
    pet = ndimage.gaussian_filter(mri, 1.5)
    pet = pet / pet.max()
    return mri, pet, inside


def _fused_images(mri, pet, seed=1):
    rng = np.random.default_rng(seed)
    noisy = np.clip(0.5 * mri + 0.5 * pet + 0.05 * rng.standard_normal(mri.shape), 0, 1)
    return [0.6 * mri + 0.4 * pet, noisy, mri.copy(), np.zeros_like(mri)]


def _assert_close(got: dict, want: dict, protocol: str) -> None:
    assert list(got) == list(want)
    for key in want:
        rtol = RTOL_FLOAT32 if (protocol, key) in FLOAT32_METRICS else RTOL
        assert got[key] == pytest.approx(want[key], rel=rtol, abs=1e-12), key


@pytest.mark.parametrize("use_mask", [False, True])
def test_prepared_equals_direct_for_every_fused_image(use_mask) -> None:
    mri, pet, inside = _head()
    mask = inside if use_mask else None
    sources = prep.SubjectSources(mri, pet, mask)  # one preparation for all fused images
    for fused in _fused_images(mri, pet):
        for protocol in PROTOCOLS:
            want = direct_metrics(fused, mri, pet, protocol=protocol, mask=mask)
            _assert_close(prep.score(fused, sources, protocol), want, protocol)
            _assert_close(
                compute_metrics(fused, mri, pet, protocol=protocol, mask=mask), want, protocol
            )


def test_prepared_equals_direct_on_2d_and_8bit_inputs() -> None:
    mri, pet, _ = _head((24, 20, 3))
    fused = 0.5 * (mri + pet)
    m2, p2, f2 = mri[..., 1], pet[..., 1], fused[..., 1]
    for protocol in ("paper", "suite2d"):
        want = direct_metrics(f2, m2, p2, protocol=protocol)
        _assert_close(prep.score(f2, prep.SubjectSources(m2, p2), protocol), want, protocol)
    m8, p8, f8 = (np.round(255 * x) for x in (mri, pet, fused))
    want = direct_metrics(f8, m8, p8, protocol="suite2d")
    _assert_close(prep.score(f8, prep.SubjectSources(m8, p8), "suite2d"), want, "suite2d")


def test_prepared_errors_match_direct() -> None:
    mri, pet, _ = _head()
    sources = prep.SubjectSources(mri, pet)
    with pytest.raises(ValueError, match="protocol: unknown"):
        prep.score(mri, sources, "nope")
    with pytest.raises(ValueError, match="shape mismatch"):
        prep.score(mri[:-1], sources, "paper")
    with pytest.raises(ValueError, match="fused: 1 NaN/Inf"):
        prep.score(np.where(mri == mri.max(), np.nan, mri), sources, "volume")
    with pytest.raises(ValueError, match="different scales"):
        prep.score(np.round(255 * mri), sources, "suite2d")
    empty = prep.SubjectSources(mri, pet, np.zeros(mri.shape, bool))
    for protocol in ("volume", "suite2d"):
        with pytest.raises(ValueError, match="no brain voxels"):
            prep.score(mri, empty, protocol)
    with pytest.raises(ValueError, match="fused: expected a 3D array"):
        prep.score(mri[..., 0], prep.SubjectSources(mri[..., 0], pet[..., 0]), "volume")
    with pytest.raises(ValueError, match="mask: must be boolean"):
        prep.SubjectSources(mri, pet, np.full(mri.shape, 0.5))


def test_histogram_bins_are_numpys() -> None:
    rng = np.random.default_rng(3)
    for a, b in [(rng.random(500), rng.random(500)), (np.full(50, 0.3), rng.random(50))]:
        a[:3] = a.max()  # values on the last edge
        want, _, _ = np.histogram2d(a, b, bins=100)
        codes = prep.histogram_bins(a, 100) * 100 + prep.histogram_bins(b, 100)
        assert np.array_equal(np.bincount(codes, minlength=10000).reshape(100, 100), want)


def test_suite_parts_equal_direct_functions() -> None:
    rng = np.random.default_rng(4)
    f, a, b = (np.round(255 * rng.random((3, 20, 18))) for _ in range(3))
    a[1] = 7.0  # a flat reference slice
    parts = suite.prepare_sources(a, b)
    got = suite.suite_prepared(f, parts)
    want = suite.suite_slices(f, a, b)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=1e-12, err_msg=key)
    grey = suite.mutual_information_grey(suite._grey(f), suite._grey(a))
    np.testing.assert_allclose(grey, suite.mutual_information_8bit(f, a), rtol=RTOL, atol=1e-12)


def _cohort(tmp_path, n=2):
    rows, indexes = [], {"blend": [], "mri": []}
    for i in range(n):
        sid = f"sub-{i}"
        mri, pet, inside = _head(seed=i)
        paths = {
            "mri_path": save_nifti(mri, np.eye(4), tmp_path / f"{sid}_mri.nii.gz"),
            "pet_path": save_nifti(pet, np.eye(4), tmp_path / f"{sid}_pet.nii.gz"),
            "mask_path": save_nifti(inside * 1.0, np.eye(4), tmp_path / f"{sid}_mask.nii.gz"),
        }
        rows.append({"subject_id": sid, "split": "test", "group": "CN", **paths})
        for name, img in (("blend", 0.5 * (mri + pet)), ("mri", mri)):
            path = save_nifti(img, np.eye(4), tmp_path / f"{sid}_{name}.nii.gz")
            indexes[name].append({"subject_id": sid, "fused_path": str(path)})
    return pd.DataFrame(rows), {k: pd.DataFrame(v) for k, v in indexes.items()}


def test_evaluate_methods_one_pass_equals_per_method(tmp_path, monkeypatch) -> None:
    subjects, indexes = _cohort(tmp_path)
    calls = []
    original = prep.SubjectSources.__init__

    def counting(self, *args, **kwargs):
        calls.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(prep.SubjectSources, "__init__", counting)
    entries = [("blend", indexes["blend"]), ("mri", indexes["mri"]), ("blend", indexes["blend"])]
    tables = evaluate_methods(entries, protocols=list(PROTOCOLS), subjects=subjects)
    assert len(calls) == len(subjects)  # sources prepared once per subject
    for (method, index), table in zip(entries, tables, strict=True):
        direct = evaluate_method(
            method, index, protocols=list(PROTOCOLS), subjects=subjects, metrics_fn=direct_metrics
        )
        pd.testing.assert_frame_equal(
            table.drop(columns="value"), direct.drop(columns="value"), check_dtype=False
        )
        keys = zip(table["protocol"], table["metric"], strict=True)
        f32 = np.array([key in FLOAT32_METRICS for key in keys])
        for rows, rtol in ((f32, RTOL_FLOAT32), (~f32, RTOL)):
            np.testing.assert_allclose(
                table["value"][rows], direct["value"][rows], rtol=rtol, atol=1e-12
            )


def test_evaluate_pass_shards_and_selection_round_trip(tmp_path) -> None:
    from fusion3d.evaluation.scoring import evaluate_pass, select_pass_rows
    from fusion3d.io import read_tsv, write_tsv

    subjects, indexes = _cohort(tmp_path, n=3)
    entries = [
        ("net", 0, indexes["blend"]),
        ("net", 1, indexes["mri"]),
        ("avg", None, indexes["blend"]),
    ]
    paths = []
    for shard in range(2):
        table = evaluate_pass(
            entries, protocols=["paper"], subjects=subjects, shard=shard, n_shards=2
        )
        paths.append(write_tsv(table, tmp_path / f"shard-{shard}.tsv"))
    passes = [
        read_tsv(p, dtype={"subject_id": str, "method": str}, float_precision="round_trip")
        for p in paths
    ]
    for method, seed, index in entries:
        got = select_pass_rows(passes, method, seed, index)
        want = evaluate_method(method, index, protocols=["paper"], subjects=subjects)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=True)
    with pytest.raises(ValueError, match="no metric rows"):
        select_pass_rows(passes[:1], "avg", None, indexes["blend"])
    with pytest.raises(ValueError, match="shard: 2"):
        evaluate_pass(entries, protocols=["paper"], subjects=subjects, shard=2, n_shards=2)
