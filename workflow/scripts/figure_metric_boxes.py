"""Box plots of each metric by method (paper protocol, test split)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import read_tsv
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.report.figures import plot_metric_boxes

    plot_metric_boxes(read_tsv(snakemake.input.long), [snakemake.output.png, snakemake.output.pdf])
