"""Metrics of one method (a network: one seed's fusions) on every subject, all protocols
(rules evaluate and evaluate_seed)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import read_tsv, write_tsv
from fusion3d.workflow import (
    evaluation_subjects,
    read_split,
    script_logging,
    set_threads,
    split_with_inputs,
)

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    from fusion3d.evaluation import evaluate_method

    index = read_tsv(snakemake.input.index, dtype=str)
    long = evaluate_method(
        snakemake.wildcards.method,
        index,
        protocols=list(snakemake.params.protocols),
        subjects=evaluation_subjects(
            split_with_inputs(read_split(snakemake.input.split), snakemake.input.images)
        ),
    )
    long["seed"] = snakemake.params.seed  # None (empty) for a classic method
    write_tsv(long, snakemake.output.metrics)
    log.info("%d metric rows", len(long))
