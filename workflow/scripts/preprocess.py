"""Preprocess one subject's T1 + FDG pair (rule preprocess)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    from fusion3d.preprocess import preprocess_pair

    result = preprocess_pair(
        snakemake.input.mri,
        snakemake.input.pet,
        snakemake.params.out_dir,
        snakemake.wildcards.subject,
        options=dict(snakemake.params.options),
        threads=snakemake.threads,
    )
    for flag in result["qc"].get("flags", []):
        log.warning("QC flag %s: %s", flag.get("flag"), flag.get("reason"))
