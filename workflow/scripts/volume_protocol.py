"""Table 1 and the box plots of the 3D volume protocol, beside the paper protocol's (rule
volume_protocol)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import read_tsv
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.evaluation.tables import write_table1
    from fusion3d.report.figures import plot_metric_boxes
    from fusion3d.metrics.names import VOLUME_NAMES

    long = read_tsv(snakemake.input.long)
    reference = snakemake.params.reference
    out = {"csv": snakemake.output.table_csv, "md": snakemake.output.table_md, "tex": snakemake.output.table_tex}
    write_table1(long, out, protocol="volume", metrics=VOLUME_NAMES, reference=reference)
    outputs = [snakemake.output.png, snakemake.output.pdf]
    plot_metric_boxes(long, outputs, protocol="volume", reference=reference)
    log.info("volume protocol: Table 1 and box plots written")
