"""The paper's Table 1 beside ours: values, confidence intervals, the table and the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fusion3d.evaluation.long_table import LONG_COLUMNS
from fusion3d.report.figures import plot_paper_comparison
from fusion3d.report.paper import PAPER_METRICS, PAPER_TABLE1, compare_with_paper, write_comparison


def long_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for method, seeds in (("dcfb3d", [1, 2]), ("matr", [1, 2]), ("average", [None])):
        for seed in seeds:
            for i in range(6):
                for metric in ("psnr", "ssim", "nmi", "fsim", "mi"):
                    base = PAPER_TABLE1.get(method, PAPER_TABLE1["dcfb3d"])
                    col = {v: k for k, v in PAPER_METRICS.items()}.get(metric, "PSNR")
                    rows.append(
                        {
                            "subject_id": f"s{i}",
                            "split": "test" if i < 5 else "train",
                            "group": "CN",
                            "method": method,
                            "protocol": "paper",
                            "metric": metric,
                            "value": base[col][0] + rng.normal(0, 0.1),
                            "seed": seed,
                        }
                    )
    return pd.DataFrame(rows, columns=[*LONG_COLUMNS, "seed"])


def test_values_and_intervals_are_the_seed_averaged_test_means():
    long = long_table()
    table = compare_with_paper(long)
    # only the paper's methods that ran, in the paper's order, with its four columns
    assert list(dict.fromkeys(table["method"])) == ["matr", "dcfb3d"]
    assert list(table["paper_column"][:4]) == ["PSNR", "SSIM", "NMI", "FMI"]
    row = table[(table["method"] == "dcfb3d") & (table["paper_column"] == "FMI")].iloc[0]
    assert row["metric"] == "fsim" and row["paper_mean"] == 0.807
    sel = long[
        (long["method"] == "dcfb3d") & (long["metric"] == "fsim") & (long["split"] == "test")
    ]
    per_subject = sel.groupby("subject_id")["value"].mean().to_numpy()
    assert row["n_subjects"] == 5 and row["n_seeds"] == 2
    assert row["ours_mean"] == pytest.approx(per_subject.mean())
    low, high = stats.t.interval(0.95, 4, loc=per_subject.mean(), scale=stats.sem(per_subject))
    assert (row["ours_ci_low"], row["ours_ci_high"]) == pytest.approx((low, high))
    assert row["paper_in_ci"] == bool(low <= 0.807 <= high)


def test_table_and_figure_are_written(tmp_path):
    table = write_comparison(long_table(), tmp_path / "c.tsv", tmp_path / "c.md")
    md = (tmp_path / "c.md").read_text()
    assert md.startswith("| Method | PSNR paper | PSNR ours [95 % CI]")
    rows = [line for line in md.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 2 and rows[1].startswith("| DC2Fusion (ours) | 20.714 +- 1.377 |")
    assert "5 test subjects" in md and "2 seed(s)" in md
    assert len(pd.read_csv(tmp_path / "c.tsv", sep="\t")) == len(table) == 8
    paths = plot_paper_comparison(table, [tmp_path / "f.png", tmp_path / "f.pdf"])
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="no method"):
        plot_paper_comparison(table.iloc[0:0], tmp_path / "g.png")
