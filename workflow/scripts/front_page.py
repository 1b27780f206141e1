"""The report's front page: cohort, Table 1, paper vs ours, figures, QC table (rule front_page)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.report.frontpage import write_front_page

    inputs = snakemake.input
    write_front_page(
        snakemake.output.rst,
        {k: inputs[k] for k in ("pairs", "excluded", "split", "flags", "qc")},
        table1_md=inputs.table1,
        paper_vs_ours_md=inputs.get("paper_vs_ours"),
        probe_tsv=inputs.get("probe"),
        figures=snakemake.params.figures,
        viewers=True,
        embedded=[page.stem for page in Path(inputs.report_pages).glob("*.html")],
    )
    log.info("front page written to %s", snakemake.output.rst)
