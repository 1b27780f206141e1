"""The study's tables: long metrics, Table 1, paired tests, groups (rule tables)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

import pandas as pd

from fusion3d.io import read_tsv, write_tsv
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.evaluation.statistics import group_breakdown, paired_tests
    from fusion3d.evaluation.tables import write_table1

    long = pd.concat([read_tsv(p) for p in snakemake.input.metrics], ignore_index=True)
    write_tsv(long, snakemake.output.long)
    reference = snakemake.params.reference
    write_table1(
        long,
        {
            "csv": snakemake.output.table1_csv,
            "md": snakemake.output.table1_md,
            "tex": snakemake.output.table1_tex,
        },
        reference=reference,
        notes=snakemake.params.notes,
    )
    write_tsv(paired_tests(long, reference=reference), snakemake.output.stats)
    write_tsv(group_breakdown(long), snakemake.output.by_group)
    log.info("tables written from %d rows", len(long))
