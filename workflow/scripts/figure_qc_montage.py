"""A montage of the per-subject QC figures."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.workflow import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.figures import plot_qc_montage

    plot_qc_montage(list(snakemake.input.qc_png), [snakemake.output.png, snakemake.output.pdf])
