"""The QC montage of the cohort, a page per ``figures.qc_per_page`` subjects."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.report.figures import plot_qc_montage_pages

    pages = plot_qc_montage_pages(
        list(snakemake.input.qc_png),
        snakemake.output.pages,
        snakemake.output.pdf,
        per_page=snakemake.params.per_page,
    )
    log.info("%d subjects on %d page(s)", len(snakemake.input.qc_png), len(pages))
