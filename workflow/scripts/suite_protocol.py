"""Table 1 of the suite2d protocol, beside the paper protocol's (rule suite_protocol)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import read_tsv
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.evaluation.tables import write_table1
    from fusion3d.metrics.names import SUITE_NAMES

    long = read_tsv(snakemake.input.long)
    out = {"csv": snakemake.output.table_csv, "md": snakemake.output.table_md, "tex": snakemake.output.table_tex}
    write_table1(long, out, protocol="suite2d", metrics=SUITE_NAMES, reference=snakemake.params.reference)
    log.info("suite2d protocol: Table 1 written")
