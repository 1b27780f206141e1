"""The diagnostic probe on a synthetic cohort large enough for it: the real workflow, end to end.

The default study's 16 subjects (8 CN / 4 MCI / 4 AD) are below ``probe.min_per_class``,
so its ``tables/probe.tsv`` gives the reason instead of numbers. This benchmark runs the
project's workflow on a larger synthetic cohort (default 40 subjects: 20 CN / 10 MCI /
10 AD) with the default study's settings otherwise (every method; one training seed
unless ``--seeds``), up to the probe: generation, ingest, preprocessing with ANTs, the
split, training and inference of every network, the classic fusions, the regional
features and the probe on all three tasks. Metrics, figures other than the probe's and
the viewer are not built. It prints the probe table and the wall time of each stage from
``results/benchmarks/``; ``--no-effects`` draws the same cohort without diagnosis effects
(a null cohort: every AUC's CI should cover 0.5). The FDG is rendered as a real scan looks
(noise, 8 mm resolution: ``cohort.synthetic.pet``'s defaults); ``--pet-clean`` renders the
clean PET of the studies before 2026-12-07. The convergence study (``config/convergence.yaml``)
holds the same 40 subjects with a noisier realistic PET and reports the probe as well.

    .venv/bin/python benchmarks/bench_probe.py --out /tmp/probe40 --n-subjects 40
    # only the references (T1, PET, both) and one classic fusion: no training (34.7 min, 2026-12-07)
    .venv/bin/python benchmarks/bench_probe.py --out /tmp/probe40 --n-subjects 40 --methods average
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import update_config

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder of the study (results/ inside)"
    )
    parser.add_argument("--n-subjects", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3407])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--no-effects", action="store_true", help="cohort without diagnosis effects"
    )
    parser.add_argument("--tasks", nargs="+", default=["AD_vs_CN", "CN_vs_MCI", "CN_vs_MCI_vs_AD"])
    parser.add_argument(
        "--methods",
        nargs="+",
        help="the study's methods (default: the default study's); the references are always probed",
    )
    parser.add_argument(
        "--pet-clean",
        action="store_true",
        help="the clean PET (cohort.synthetic.pet.realistic off)",
    )
    args = parser.parse_args(argv)

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results"
    config = {
        "results": str(results),
        "cohort": {
            "synthetic": {
                "n_subjects": args.n_subjects,
                "diagnosis_effects": not args.no_effects,
                "pet": {"realistic": not args.pet_clean},
            }
        },
        "train": {"seeds": list(args.seeds)},
        "probe": {"tasks": list(args.tasks)},
    }
    if args.methods:
        # one config file, the default study's with these methods: the networks left out
        # lose their train.overrides (a merge of two config files cannot remove keys)
        study = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        overrides = study["train"].get("overrides", {})
        study["train"]["overrides"] = {k: v for k, v in overrides.items() if k in args.methods}
        study["methods"] = list(args.methods)
        study["evaluate"]["reference"] = args.methods[0]
        update_config(study, config)  # as Snakemake merges config files
        config = study
    config_path = out / "bench_probe.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--cores",
        str(args.cores),
        f"{results}/tables/probe.tsv",
        "--configfile",
        *([] if args.methods else [str(REPO / "config" / "config.yaml")]),
        str(config_path),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    start = time.perf_counter()
    with open(out / "snakemake.log", "w") as log:
        code = subprocess.run(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    wall = time.perf_counter() - start
    if code != 0:
        print(f"snakemake failed ({code}); see {out / 'snakemake.log'}", file=sys.stderr)
        return code

    table = pd.read_csv(results / "tables" / "probe.tsv", sep="\t")
    shown = table[["task", "label", "n_per_class", "auc", "ci_low", "ci_high", "p_holm", "status"]]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    stages = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(results / "benchmarks").parts[0]
        seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
        stages[stage] = stages.get(stage, 0.0) + seconds
    print(
        f"\n{args.n_subjects} subjects, diagnosis effects {'off' if args.no_effects else 'on'}, "
        f"seeds {args.seeds}: {wall / 60:.1f} min wall on {args.cores} cores"
    )
    print("job seconds by stage: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(stages.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
