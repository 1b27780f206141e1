"""Gather the per-subject QC into qc.tsv and flags.tsv (rule qc_table); stop on a QC storm."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import write_tsv
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.preprocess import collect_qc
    from fusion3d.preprocess.qc_storm import check_storm

    qc, flags = collect_qc(
        list(snakemake.input.qc),
        cohort_max_z=snakemake.params.cohort_max_z,
        cohort_min_subjects=snakemake.params.cohort_min_subjects,
    )
    kinds = flags["kind"].value_counts().to_dict() if len(flags) else {}
    log.info("%d subjects, %d flags %s", len(qc), len(flags), kinds)
    # a bound that flags most of the cohort stops the study before the tables exist
    for storm in check_storm(qc, flags, snakemake.params.storm_share, snakemake.params.on_flag):
        log.warning("%s", storm)
    write_tsv(qc, snakemake.output.qc)
    write_tsv(flags, snakemake.output.flags)
