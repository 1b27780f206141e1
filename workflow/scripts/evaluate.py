"""Metrics of one run of a method (a network: one seed's fusions) on every subject, all protocols
(rule evaluate): its rows of the evaluation pass's shards."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import read_tsv, write_tsv
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.evaluation.scoring import select_pass_rows

    index = read_tsv(snakemake.input.index, dtype=str)
    passes = [
        read_tsv(path, dtype={"subject_id": str, "method": str}, float_precision="round_trip")
        for path in snakemake.input.passes
    ]
    long = select_pass_rows(passes, snakemake.wildcards.method, snakemake.params.seed, index)
    long["seed"] = snakemake.params.seed  # None (empty) for a classic method
    write_tsv(long, snakemake.output.metrics)
    log.info("%d metric rows from %d shard(s)", len(long), len(passes))
