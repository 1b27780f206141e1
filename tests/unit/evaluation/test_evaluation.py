"""Tests for fusion3d.evaluation: long table, Table 1, Holm, Wilcoxon, group breakdown."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fusion3d.evaluation.long_table import LONG_COLUMNS, average_over_seeds, seed_spread
from fusion3d.evaluation.scoring import evaluate_method
from fusion3d.evaluation.statistics import PAIRED_COLUMNS, group_breakdown, holm, paired_tests
from fusion3d.evaluation.tables import (
    PAPER_FMI_NOTE,
    PAPER_METRICS,
    SEEDS_NOTE,
    latex_escape,
    table1,
    write_table1,
)
from fusion3d.io import save_nifti


def table1_paths(prefix) -> dict[str, str]:
    """The three declared outputs of a Table 1 rule, ``<prefix>.{csv,md,tex}``."""
    return {ext: f"{prefix}.{ext}" for ext in ("csv", "md", "tex")}


def stand_in_metrics(fused, mri, pet, *, protocol, mask=None):
    """Closed-form stand-in for fusion3d.metrics.compute_metrics."""
    sel = np.ones(fused.shape, bool) if mask is None else mask
    if protocol == "paper":
        return {
            "mae_mri": float(np.abs(fused - mri)[sel].mean()),
            "n_voxels": float(sel.sum()),
        }
    return {"mean": float(fused[sel].mean())}


@pytest.fixture
def cohort(tmp_path):
    rng = np.random.default_rng(0)
    rows, index = [], []
    for i, (split, group) in enumerate([("test", "CN"), ("test", "AD"), ("train", "CN")]):
        sid = f"sub-{i}_ses-M000"
        mri, pet = rng.random((4, 5, 6)), rng.random((4, 5, 6))
        fused = np.full((4, 5, 6), 0.5)
        mask = np.zeros((4, 5, 6))
        mask[:2] = 1.0
        p = {
            "mri_path": str(save_nifti(mri, np.eye(4), tmp_path / f"{sid}_mri.nii.gz")),
            "pet_path": str(save_nifti(pet, np.eye(4), tmp_path / f"{sid}_pet.nii.gz")),
            "mask_path": str(save_nifti(mask, np.eye(4), tmp_path / f"{sid}_mask.nii.gz"))
            if i != 2
            else np.nan,
        }
        rows.append({"subject_id": sid, "split": split, "group": group, **p})
        index.append(
            {
                "subject_id": sid,
                "fused_path": str(save_nifti(fused, np.eye(4), tmp_path / f"{sid}_f.nii.gz")),
            }
        )
    return pd.DataFrame(index), pd.DataFrame(rows), tmp_path


def test_evaluate_method_long_table(cohort) -> None:
    index, subjects, _ = cohort
    long = evaluate_method(
        "average",
        index,
        protocols=["paper", "volume"],
        subjects=subjects,
        metrics_fn=stand_in_metrics,
    )
    assert list(long.columns) == list(LONG_COLUMNS)
    assert len(long) == 3 * (2 + 1)
    assert set(long["method"]) == {"average"}
    nvox = long[long["metric"] == "n_voxels"].set_index("subject_id")["value"]
    # mask_path > 0.5 gives 2*5*6 voxels; the third subject has no mask (all 120)
    assert nvox.tolist() == [60.0, 60.0, 120.0]
    row = long[(long["subject_id"] == "sub-1_ses-M000") & (long["metric"] == "mean")]
    assert row["value"].item() == pytest.approx(0.5)
    assert row["split"].item() == "test" and row["group"].item() == "AD"


def test_evaluate_method_errors(cohort) -> None:
    index, subjects, tmp_path = cohort
    kw = {"protocols": ["paper"], "metrics_fn": stand_in_metrics}
    with pytest.raises(ValueError, match="missing column"):
        evaluate_method("a", index.drop(columns="fused_path"), subjects=subjects, **kw)
    bad = index.copy()
    bad.loc[0, "subject_id"] = "sub-x"
    with pytest.raises(ValueError, match="not in the subjects table.*sub-x"):
        evaluate_method("a", bad, subjects=subjects, **kw)
    bad = index.copy()
    bad.loc[0, "fused_path"] = str(
        save_nifti(np.zeros((3, 3, 3)), np.eye(4), tmp_path / "small.nii.gz")
    )
    with pytest.raises(ValueError, match="small.nii.gz has shape"):
        evaluate_method("a", bad, subjects=subjects, **kw)
    bad.loc[0, "fused_path"] = str(tmp_path / "gone.nii.gz")
    with pytest.raises(FileNotFoundError, match="gone.nii.gz"):
        evaluate_method("a", bad, subjects=subjects, **kw)
    with pytest.raises(ValueError, match="protocols"):
        evaluate_method("a", index, subjects=subjects, protocols=[], metrics_fn=stand_in_metrics)


def make_long(values: dict[str, list[float]], *, metric="psnr", protocol="paper", groups=None):
    rows = []
    for method, vals in values.items():
        for i, v in enumerate(vals):
            rows.append(
                {
                    "subject_id": f"s{i}",
                    "split": "test",
                    "group": (groups or ["CN"] * len(vals))[i],
                    "method": method,
                    "protocol": protocol,
                    "metric": metric,
                    "value": v,
                }
            )
    return pd.DataFrame(rows, columns=list(LONG_COLUMNS))


def seeded(values_by_seed: dict[int, dict[str, list[float]]], classic: dict[str, list[float]]):
    """A long table with a seed column: networks per seed, classic methods without a seed."""
    parts = [make_long(v).assign(seed=seed) for seed, v in values_by_seed.items()]
    parts.append(make_long(classic).assign(seed=None))
    return pd.concat(parts, ignore_index=True)


def test_seeds_are_averaged_per_subject_and_their_spread_reported(tmp_path) -> None:
    long = seeded(
        {1: {"dcfb3d": [10.0, 12.0, 14.0]}, 2: {"dcfb3d": [12.0, 14.0, 19.0]}},
        {"average": [11.0, 11.0, 11.0]},
    )
    avg = average_over_seeds(long)
    net = avg[avg["method"] == "dcfb3d"].set_index("subject_id")["value"]
    assert net.to_dict() == {"s0": 11.0, "s1": 13.0, "s2": 16.5}  # per-subject mean over seeds
    assert len(avg[avg["method"] == "average"]) == 3  # a classic method: one value per subject
    # sd across seeds of the test-set mean: means 12 and 15 -> sd = 3 / sqrt(2)
    sd, n = seed_spread(long, protocol="paper")[("dcfb3d", "psnr")]
    assert n == 2 and sd == pytest.approx(3 / np.sqrt(2))
    assert ("average", "psnr") not in seed_spread(long, protocol="paper")
    t = table1(long, metrics=["psnr"])
    row = t.set_index("Method").loc["DC2Fusion (ours)"]
    mean, std = np.mean([11.0, 13.0, 16.5]), np.std([11.0, 13.0, 16.5], ddof=1)
    assert row["PSNR"] == f"{mean:.3f} +- {std:.3f}"  # over subjects of the seed average
    assert row["Seeds"] == 2 and row["PSNR sd across seeds"] == f"{3 / np.sqrt(2):.3f}"
    assert t.set_index("Method").loc["Weighted average", "PSNR sd across seeds"] == ""
    # the paired test pairs one seed-averaged value per subject
    stats_ = paired_tests(long, reference="dcfb3d")
    assert stats_.loc[0, "n"] == 3 and stats_.loc[0, "median_reference"] == 13.0
    paths = write_table1(long, table1_paths(tmp_path / "table1"), metrics=["psnr"])
    md = paths["md"].read_text()
    assert f"{mean:.3f} +- {std:.3f} ({3 / np.sqrt(2):.3f})" in md and SEEDS_NOTE in md
    assert "PSNR sd across seeds" in pd.read_csv(paths["csv"]).columns


def test_table1_layout_and_numbers() -> None:
    long = pd.concat(
        [
            make_long({"dcfb3d": [1.0, 2.0, 3.0], "average": [0.5, 0.5, 0.5]}),
            make_long({"dcfb3d": [0.1, 0.2, 0.3], "average": [0.4]}, metric="ssim"),
            make_long({"dcfb3d": [9.0]}, protocol="volume"),
        ]
    )
    long.loc[len(long)] = ["s9", "train", "CN", "average", "paper", "psnr", 100.0]
    t = table1(long, metrics=("psnr", "ssim", "nmi"))
    assert list(t.columns) == ["Method", "2D/3D", "PSNR", "SSIM", "NMI"]
    assert t["Method"].tolist() == ["DC2Fusion (ours)", "Weighted average"]  # the paper's order
    ours = t.iloc[0]
    assert ours["2D/3D"] == "3D"
    assert ours["PSNR"] == "2.000 +- 1.000"  # sample std of 1, 2, 3
    assert ours["SSIM"] == "0.200 +- 0.100"
    assert ours["NMI"] == "n/a"
    assert t.iloc[1]["PSNR"] == "0.500 +- 0.000"  # the train row is ignored
    assert t.iloc[1]["SSIM"] == "0.400"  # one subject: mean only
    with pytest.raises(ValueError, match="no rows"):
        table1(long, protocol="suite2d")


def test_write_table1(tmp_path) -> None:
    long = pd.concat(
        [
            make_long({"dcfb3d": [1.0, 2.0], "dcfb2d": [0.0, 1.0], "wavelet": [3.0, 3.0]}),
            make_long({"dcfb3d": [0.5, 0.6], "wavelet": [0.1, 0.2]}, metric="fmi_haghighat"),
        ]
    )
    paths = write_table1(
        long, table1_paths(tmp_path / "tables" / "table1"), metrics=("psnr", "fmi_haghighat")
    )
    assert {p.name for p in paths.values()} == {"table1.csv", "table1.md", "table1.tex"}
    csv = pd.read_csv(paths["csv"])
    assert csv["Method"].tolist() == ["DC2Fusion (ours)", "DCFB slice-wise", "Wavelet (DWT)"]
    assert csv["2D/3D"].tolist() == ["3D", "2D", "3D"]
    md = paths["md"].read_text().splitlines()
    assert md[0] == "| Method | 2D/3D | PSNR | FMI_Haghighat |"
    assert md[4] == "| Wavelet (DWT) | 3D | **3.000 +- 0.000** | 0.150 +- 0.071 |"
    tex = paths["tex"].read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "FMI\\_Haghighat" in tex and "FMI_Haghighat" not in tex
    assert "\\textbf{0.550 $\\pm$ 0.071}" in tex
    assert not [p for p in (tmp_path / "tables").iterdir() if ".part" in p.name]


def test_table1_says_which_column_is_the_papers_fmi(tmp_path) -> None:
    metrics = ("psnr", "ssim", "nmi", "fsim", "mi", "fsim_zhang", "fmi_haghighat")
    assert PAPER_METRICS == metrics
    long = pd.concat(
        [make_long({"dcfb3d": [0.8, 0.9], "average": [0.7, 0.6]}, metric=m) for m in metrics]
    )
    t = table1(long)
    assert list(t.columns)[2:] == [
        "PSNR",
        "SSIM",
        "NMI",
        "FSIM",
        "MI",
        "FSIM_Zhang",
        "FMI_Haghighat",
    ]
    paths = write_table1(long, table1_paths(tmp_path / "table1"))
    md = paths["md"].read_text()
    assert md.rstrip().endswith(PAPER_FMI_NOTE)
    assert "FMI column is FSIM" in md and "0.795-0.817" in md
    tex = paths["tex"].read_text()
    caption = next(line for line in tex.splitlines() if line.startswith("\\caption"))
    assert "FMI column is FSIM" in caption and "FSIM\\_Zhang" in caption
    # Other protocols, or a paper table without fsim, carry no such note.
    other = write_table1(
        long.assign(protocol="volume"), table1_paths(tmp_path / "vol"), protocol="volume"
    )
    assert "FMI column" not in other["md"].read_text() + other["tex"].read_text()
    no_fsim = write_table1(long, table1_paths(tmp_path / "nofsim"), metrics=("psnr",))
    assert "FMI column" not in no_fsim["md"].read_text()


def test_latex_escape() -> None:
    assert latex_escape("a_b & 50% {x}") == r"a\_b \& 50\% \{x\}"
    assert latex_escape("\\") == r"\textbackslash{}"


def test_holm_hand_worked() -> None:
    # m = 4. Sorted: 0.005*4 = 0.02; 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # capped at 1; NaN ignored and not counted in m
    out = holm([0.6, np.nan, 0.2])
    np.testing.assert_allclose(out, [0.6, np.nan, 0.4])
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]
    assert np.isnan(holm([np.nan])).all()
    assert holm([]).size == 0
    with pytest.raises(ValueError, match="pvalues"):
        holm([1.5])


def test_paired_tests_against_scipy() -> None:
    ref = [3.0, 4.1, 5.2, 2.9, 6.0, 4.4, 5.1]
    a = [2.0, 3.9, 4.0, 3.0, 4.5, 4.3, 3.3]
    b = [3.1, 4.0, 5.5, 2.0, 6.2, 4.0, 5.0]
    long = make_long({"dcfb3d": ref, "average": a, "maximum": b})
    res = paired_tests(long)
    assert list(res.columns) == list(PAIRED_COLUMNS)
    assert res["method"].tolist() == ["average", "maximum"]
    r = res.set_index("method")
    exp_a = stats.wilcoxon(np.subtract(a, ref))
    exp_b = stats.wilcoxon(np.subtract(b, ref))
    assert r.loc["average", "p"] == pytest.approx(exp_a.pvalue)
    assert r.loc["average", "statistic"] == pytest.approx(exp_a.statistic)
    assert r.loc["average", "median_diff"] == pytest.approx(np.median(np.subtract(a, ref)))
    assert r.loc["average", "n"] == 7
    lo, hi = sorted([exp_a.pvalue, exp_b.pvalue])
    assert sorted(r["p_holm"].tolist()) == pytest.approx([2 * lo, max(2 * lo, hi)])


def test_paired_tests_edge_cases() -> None:
    long = pd.concat(
        [
            make_long({"dcfb3d": [1.0, 2.0, 3.0], "average": [1.0, 2.0, 3.0]}),
            make_long({"dcfb3d": [1.0], "average": [2.0]}, metric="ssim"),
            make_long({"average": [1.0, 2.0]}, metric="nmi"),  # no reference: skipped
        ]
    )
    # a subject missing for one method is not paired
    long = long[
        ~((long["metric"] == "psnr") & (long["subject_id"] == "s2") & (long["method"] == "average"))
    ]
    res = paired_tests(long).set_index("metric")
    assert set(res.index) == {"psnr", "ssim"}
    assert np.isnan(res.loc["psnr", "p"]) and "zero" in res.loc["psnr", "note"]
    assert res.loc["psnr", "n"] == 2
    assert np.isnan(res.loc["ssim", "p"]) and "too few" in res.loc["ssim", "note"]
    assert np.isnan(res.loc["ssim", "p_holm"])
    assert paired_tests(long, reference="nobody").empty


def test_group_breakdown() -> None:
    long = make_long({"average": [1.0, 3.0, 10.0]}, groups=["CN", "CN", "AD"])
    gb = group_breakdown(long).set_index("group")
    assert list(gb.columns) == ["method", "protocol", "metric", "mean", "std", "n"]
    assert gb.loc["CN", "mean"] == 2.0
    assert gb.loc["CN", "std"] == pytest.approx(np.sqrt(2.0))
    assert gb.loc["CN", "n"] == 2
    assert gb.loc["AD", "n"] == 1 and np.isnan(gb.loc["AD", "std"])
    assert group_breakdown(long, split="val").empty


def test_evaluate_method_with_real_metrics(tmp_path) -> None:
    """Integration with fusion3d.metrics (skipped while that module is absent)."""
    metrics = pytest.importorskip("fusion3d.metrics")
    rng = np.random.default_rng(1)
    mri = rng.random((16, 16, 16))
    pet = rng.random((16, 16, 16))
    mask = np.zeros((16, 16, 16))
    mask[2:14, 2:14, 2:14] = 1
    subjects = pd.DataFrame(
        [
            {
                "subject_id": "s1",
                "split": "test",
                "group": "CN",
                "mri_path": str(save_nifti(mri, np.eye(4), tmp_path / "m.nii.gz", np.float32)),
                "pet_path": str(save_nifti(pet, np.eye(4), tmp_path / "p.nii.gz", np.float32)),
                "mask_path": str(save_nifti(mask, np.eye(4), tmp_path / "k.nii.gz", np.float32)),
            }
        ]
    )
    fused = save_nifti(mri, np.eye(4), tmp_path / "f.nii.gz", np.float32)
    index = pd.DataFrame({"subject_id": ["s1"], "fused_path": [str(fused)]})
    long = evaluate_method("copy", index, protocols=["paper", "volume"], subjects=subjects)
    got = long.set_index(["protocol", "metric"])["value"]
    expected = metrics.compute_metrics(
        mri.astype(np.float32),
        mri.astype(np.float32),
        pet.astype(np.float32),
        protocol="volume",
        mask=mask > 0.5,
    )
    for name, value in expected.items():
        assert got[("volume", name)] == pytest.approx(value)
    assert set(long.loc[long["protocol"] == "paper", "metric"]) >= {"psnr", "ssim", "nmi"}


def test_paired_tests_state_their_reach(tmp_path) -> None:
    from fusion3d.evaluation.statistics import min_attainable_p, reach_note
    from fusion3d.evaluation.tables import table1_reach_note

    assert [min_attainable_p(n) for n in (4, 5, 6)] == [0.125, 0.0625, 0.03125]
    assert np.isnan(min_attainable_p(0)) and reach_note(6) == ""
    # 4 subjects, every difference of one sign: the exact test's floor, not significant
    long = make_long({"dcfb3d": [1.0, 2.0, 3.0, 4.0], "average": [2.0, 3.0, 4.5, 6.0]})
    row = paired_tests(long).iloc[0]
    assert row["n"] == 4 and row["min_p"] == 0.125 and row["p"] == pytest.approx(0.125)
    assert "smallest attainable p is 0.125" in row["note"] and "p < 0.05" in row["note"]
    seven = make_long({"dcfb3d": list(range(7)), "average": [x + 1.0 for x in range(7)]})
    row7 = paired_tests(seven).iloc[0]
    assert row7["min_p"] == pytest.approx(2 / 2**7) and row7["note"] == ""
    md = write_table1(long, table1_paths(tmp_path / "t"), metrics=["psnr"])["md"].read_text()
    assert table1_reach_note(4) in md and "cannot give p below 0.125" in md
    md7 = write_table1(seven, table1_paths(tmp_path / "u"), metrics=["psnr"])["md"].read_text()
    assert "cannot give" not in md7


def test_write_table1_adds_the_given_notes(tmp_path) -> None:
    long = make_long({"dcfb3d": [1.0, 2.0], "wavelet": [3.0, 3.0]})
    note = "Whether each method's fused images keep the diagnosis: tables/probe.tsv."
    paths = write_table1(long, table1_paths(tmp_path / "table1"), metrics=["psnr"], notes=[note])
    assert paths["md"].read_text().rstrip().endswith(note)
    assert note in paths["tex"].read_text()
    assert (
        note
        not in write_table1(long, table1_paths(tmp_path / "plain"), metrics=["psnr"])[
            "md"
        ].read_text()
    )
