"""What a finished study says about the paper's question: where each network stopped, and the paired tests.

Reads a study's ``results`` folder (``config/convergence.yaml``: ``results/convergence``) and prints

1. for every network and seed, the epoch it stopped at and why (``history.csv``'s ``stop``
   column: patience or cap), the epoch of its best validation score and that score's PSNR / SSIM;
2. the paper protocol's PSNR and SSIM of every method on the test split (a network's value per
   subject is the mean over its seeds), as Table 1 has them;
3. paired two-sided Wilcoxon tests (Holm within each metric's family,
   :func:`fusion3d.evaluation.statistics.paired_tests`): DC2Fusion (3D) against its 2D twin and
   the three 2D networks, and every network against the best classic fusion of each metric;
4. the job time of each stage (``results/benchmarks``) and, with ``--log``, the wall time of
   the Snakemake run(s) from their first to last timestamp.

    .venv/bin/python benchmarks/bench_convergence.py --results results/convergence
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

NETWORKS = ("swinfuse", "matr", "dilran", "dcfb3d", "dcfb2d")
CLASSIC = ("average", "maximum", "pca", "wavelet", "laplacian")
METRICS = ("psnr", "ssim")


def stops(results: Path) -> pd.DataFrame:
    """One row per network and seed: stop epoch, reason, best epoch and its PSNR / SSIM."""
    rows = []
    for history in sorted((results / "train").glob("*/seed-*/history.csv")):
        frame = pd.read_csv(history)
        checked = frame.dropna(subset=["val_score"])
        best = checked.loc[checked["val_score"].idxmax()] if len(checked) else None
        last = frame.iloc[-1]
        rows.append(
            {
                "network": history.parent.parent.name,
                "run": history.parent.name,
                "stopped_at_epoch": int(last["epoch"]),
                "why": str(last.get("stop", "")) if pd.notna(last.get("stop", "")) else "",
                "best_epoch": int(best["epoch"]) if best is not None else -1,
                "best_val_psnr": float(best["val_psnr"]) if best is not None else float("nan"),
                "best_val_ssim": float(best["val_ssim"]) if best is not None else float("nan"),
                "train_minutes": float(frame["seconds"].sum()) / 60.0,
            }
        )
    return pd.DataFrame(rows)


def table(long: pd.DataFrame) -> pd.DataFrame:
    """Paper-protocol PSNR / SSIM on the test split: mean and sd over subjects (seed means)."""
    from fusion3d.evaluation.tables import average_over_seeds

    sel = average_over_seeds(long)
    sel = sel[(sel["split"] == "test") & (sel["protocol"] == "paper") & sel["metric"].isin(METRICS)]
    out = sel.groupby(["method", "metric"])["value"].agg(["mean", "std", "count"]).unstack("metric")
    order = [m for m in (*NETWORKS, *CLASSIC) if m in out.index]
    return out.loc[order]


def tests(long: pd.DataFrame) -> pd.DataFrame:
    """DC2Fusion against the 2D networks; every network against the best classic fusion."""
    from fusion3d.evaluation.statistics import paired_tests

    paper = long[(long["protocol"] == "paper") & long["metric"].isin(METRICS)]
    vs_3d = paired_tests(paper[paper["method"].isin(NETWORKS)], reference="dcfb3d")
    vs_3d["question"] = "DC2Fusion (3D) vs 2D"
    frames = [vs_3d]
    means = table(long)
    for metric in METRICS:
        classic = [m for m in CLASSIC if m in means.index]
        if not classic:
            continue
        best = max(classic, key=lambda m: means.loc[m, ("mean", metric)])
        sub = paper[(paper["metric"] == metric) & paper["method"].isin([*NETWORKS, best])]
        vs_classic = paired_tests(sub, reference=best)
        vs_classic["question"] = f"network vs best classic ({best})"
        frames.append(vs_classic)
    cols = ["question", "metric", "method", "reference", "n", "median_diff", "p", "p_holm"]
    return pd.concat(frames, ignore_index=True)[cols]


_STAMP = re.compile(r"^\[(\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4})\]")


def wall_minutes(logs: list[Path]) -> float:
    """Minutes from the first to the last ``[timestamp]`` line, summed over ``logs``."""
    total = 0.0
    for log in logs:
        stamps = [
            datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            for line in log.read_text(errors="replace").splitlines()
            if (m := _STAMP.match(line))
        ]
        if stamps:
            total += (stamps[-1] - stamps[0]).total_seconds() / 60.0
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="the study's results folder")
    parser.add_argument(
        "--log", type=Path, nargs="*", default=[], help="Snakemake log(s) of the run"
    )
    args = parser.parse_args(argv)
    results = args.results
    long_path = results / "tables" / "metrics_long.tsv"
    if not long_path.is_file():
        print(f"{long_path}: missing; has the study finished?", file=sys.stderr)
        return 1
    long = pd.read_csv(long_path, sep="\t", dtype={"subject_id": str})
    fmt = {"float_format": lambda v: f"{v:.4g}", "index": False}
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print("== where each network stopped ==")
        print(stops(results).to_string(**fmt))
        print("\n== paper protocol, test split (mean, sd, n over subjects) ==")
        print(table(long).to_string(float_format=lambda v: f"{v:.3f}"))
        print("\n== paired Wilcoxon, Holm within each metric's family ==")
        print(tests(long).to_string(**fmt))
    stages: dict[str, float] = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(results / "benchmarks").parts[0]
        stages[stage] = stages.get(stage, 0.0) + float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
    print(
        "\njob minutes by stage: "
        + ", ".join(f"{k} {v / 60:.1f}" for k, v in sorted(stages.items()))
    )
    if args.log:
        print(f"wall time of the run(s): {wall_minutes(args.log):.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
