"""Every fused image (all methods and seeds) of one shard of the subjects, in one pass per
subject (rule evaluate_pass)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import read_tsv, write_tsv
from fusion3d.subjects import evaluation_subjects, read_split, split_with_inputs
from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    from fusion3d.evaluation.scoring import evaluate_pass

    entries = [
        (method, seed, read_tsv(path, dtype=str))
        for (method, seed), path in zip(snakemake.params.entries, snakemake.input.indexes, strict=True)
    ]
    long = evaluate_pass(
        entries,
        protocols=list(snakemake.params.protocols),
        subjects=evaluation_subjects(
            split_with_inputs(read_split(snakemake.input.split), snakemake.input.images)
        ),
        shard=snakemake.params.shard,
        n_shards=snakemake.params.n_shards,
    )
    write_tsv(long, snakemake.output.metrics)
    log.info(
        "shard %d of %d: %d subjects, %d metric rows",
        snakemake.params.shard,
        snakemake.params.n_shards,
        long["subject_id"].nunique(),
        len(long),
    )
