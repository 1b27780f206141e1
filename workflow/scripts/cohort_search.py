"""Write the LONI IDA advanced-search strings of the cohort list (rule cohort_search)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.ingest.cohort import read_cohort, write_search_batches

    if not snakemake.input.image_ids:
        raise ValueError("config key cohort.image_ids is not set: there is no cohort list to search for")
    ids = read_cohort(snakemake.input.image_ids)
    write_search_batches(ids, snakemake.output.batches, batch_size=snakemake.params.batch_size)
    log.info("%d image IDs written in batches of %d", len(ids), snakemake.params.batch_size)
