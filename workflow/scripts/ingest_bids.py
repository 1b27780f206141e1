"""Ingest a BIDS dataset into T1w + FDG PET pairs (checkpoint ingest, cohort.source: bids)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    from fusion3d.ingest.bids_source import run_bids_ingest

    cfg = snakemake.params.config
    options = {k: v for k, v in cfg["ingest"].items()}
    options["relative_to"] = snakemake.params.relative_to
    pairs = run_bids_ingest(
        source_dir=cfg["cohort"]["bids_dir"],
        bids_dir=snakemake.output.bids,
        pairs_tsv=snakemake.output.pairs,
        excluded_tsv=snakemake.output.excluded,
        options=options,
        diagnosis_column=cfg["cohort"]["diagnosis_column"],
        diagnosis_map=cfg["cohort"]["diagnosis_map"],
        missing_tsv=snakemake.output.missing,
        header_flags_tsv=snakemake.output.header_flags,
        threads=snakemake.threads,
        # Snakemake deletes the outputs of a failed job: copies of the tables stay beside the log.
        keep_dir=Path(snakemake.log[0]).parent,
        require_pairs=True,
    )
    log.info("ingest: %d pairs", len(pairs))
