"""Speed-up of the per-subject stage with more cores: ``--cores 1`` against ``--cores 2``.

Generates the default study's synthetic cohort with N subjects and ingests it once (not timed),
then copies that working directory once per core count and times
``snakemake --until qc_table`` there: every subject's preprocessing plus the QC table, the
stage that runs one independent job per subject. Prints the wall times and the speed-up and,
with ``--out``, writes them as a TSV.

    .venv/bin/python benchmarks/bench_cores.py --n-subjects 4 --cores 1 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from fusion3d.io import write_tsv

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def snakemake(
    workdir: Path, configfiles: list[Path], *args: str, timeout: int
) -> subprocess.CompletedProcess:
    """Run the project's workflow in ``workdir``; raise with the output tail when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    command = [
        *SNAKEMAKE,
        "--directory",
        str(workdir),
        "--configfile",
        *map(str, configfiles),
        *args,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"snakemake failed ({result.returncode}): {' '.join(command)}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def bench_cores(
    n_subjects: int,
    cores: list[int],
    *,
    repeats: int = 1,
    target: str = "qc_table",
    configfile: Path | None = None,
    timeout: int = 3600,
    keep: Path | None = None,
) -> pd.DataFrame:
    """Time the per-subject stage of an N-subject synthetic study at each core count.

    Parameters
    ----------
    n_subjects : int
        Subjects of the generated synthetic cohort (at least 2).
    cores : list of int
        Core counts to compare (``--cores``); the first is the reference of the speed-up.
    repeats : int
        Timed runs per core count, each in a fresh copy of the ingested study.
    target : str
        Rule to run ``--until`` (default ``qc_table``: all preprocessing jobs plus the QC table).
    configfile : Path, optional
        A study config merged over ``config/config.yaml`` (default: the default study).
    timeout : int
        Seconds allowed to each snakemake call.
    keep : Path, optional
        Directory in which to keep the working directories (default: a temporary one, removed).

    Returns
    -------
    pandas.DataFrame
        One row per timed run: ``cores``, ``repeat``, ``wall_s``, ``speedup`` (reference median
        wall time over this run's wall time).
    """
    if n_subjects < 2:
        raise ValueError(f"n_subjects must be at least 2, got {n_subjects}")
    if not cores or any(c < 1 for c in cores):
        raise ValueError(f"cores must be positive integers, got {cores}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if configfile is not None and not Path(configfile).is_file():
        raise FileNotFoundError(f"config file {configfile} does not exist")

    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_cores_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        override = root / "bench_config.yaml"
        base = f"cohort:\n  source: synthetic\n  synthetic:\n    n_subjects: {n_subjects}\n"
        override.write_text(base)
        configs = [REPO / "config" / "config.yaml"]
        if configfile is not None:
            configs.append(Path(configfile).resolve())
        configs.append(override)

        seed_dir = root / "ingested"
        print(f"[bench_cores] generating and ingesting {n_subjects} subjects in {seed_dir}")
        snakemake(seed_dir, configs, "--cores", "2", "--until", "ingest", timeout=timeout)

        rows = []
        for n_cores in cores:
            for repeat in range(repeats):
                workdir = root / f"cores{n_cores}_run{repeat}"
                shutil.rmtree(workdir, ignore_errors=True)
                shutil.copytree(seed_dir, workdir, symlinks=True)
                start = time.perf_counter()
                snakemake(
                    workdir,
                    configs,
                    "--cores",
                    str(n_cores),
                    "--until",
                    target,
                    timeout=timeout,
                )
                wall = time.perf_counter() - start
                print(f"[bench_cores] --cores {n_cores} run {repeat}: {wall:.1f} s")
                rows.append({"cores": n_cores, "repeat": repeat, "wall_s": round(wall, 2)})
        table = pd.DataFrame(rows)
        reference = table.loc[table["cores"] == cores[0], "wall_s"].median()
        table["speedup"] = (reference / table["wall_s"]).round(3)
        return table
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subjects", type=int, default=8, help="synthetic subjects (default 8)")
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2], help="core counts")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per core count")
    parser.add_argument("--target", default="qc_table", help="rule to run --until")
    parser.add_argument(
        "--configfile",
        type=Path,
        help="study config merged over config/config.yaml (e.g. tests/e2e/config_tiny.yaml)",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per snakemake call")
    parser.add_argument("--keep", type=Path, help="keep the working directories here")
    parser.add_argument("--out", type=Path, help="write the timings to this TSV")
    args = parser.parse_args(argv)

    table = bench_cores(
        args.n_subjects,
        args.cores,
        repeats=args.repeats,
        target=args.target,
        configfile=args.configfile,
        timeout=args.timeout,
        keep=args.keep,
    )
    summary = table.groupby("cores")["wall_s"].median()
    print(table.to_string(index=False))
    print(
        f"[bench_cores] {args.n_subjects} subjects, --until {args.target}: "
        + ", ".join(f"--cores {c}: {w:.1f} s" for c, w in summary.items())
        + f"; speed-up {summary.iloc[0] / summary.iloc[-1]:.2f}x "
        f"(--cores {summary.index[-1]} vs {summary.index[0]})"
    )
    if args.out:
        write_tsv(table, args.out)
        print(f"[bench_cores] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
