"""The per-subject preprocessing outputs as a BIDS derivative (rule bids_derivative)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.ingest.derivative import write_derivative

    out = write_derivative(
        snakemake.input.pairs,
        snakemake.params.preprocess_dir,
        snakemake.output.derivative,
        raw_bids="../../bids",
    )
    log.info("BIDS derivative of the preprocessing: %s", out)
