"""The paper's Table 1 beside ours: a table and a figure (rule paper_comparison)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import read_tsv
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.report.figures import plot_paper_comparison
    from fusion3d.report.paper import write_comparison

    table = write_comparison(read_tsv(snakemake.input.long), snakemake.output.tsv, snakemake.output.md)
    plot_paper_comparison(table, [snakemake.output.png, snakemake.output.pdf])
    log.info("%d rows beside the paper's Table 1", len(table))
