"""The paper-style figure: MRI, PET and every method for test subjects in three planes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.subjects import read_split, split_with_inputs
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.report.figures import fusion_panel_from_tables

    indexes = {m: snakemake.input[m] for m in snakemake.params.methods}
    fusion_panel_from_tables(
        split_with_inputs(read_split(snakemake.input.split), snakemake.input.images),
        indexes,
        snakemake.output.png,
        snakemake.output.pdf,
        n_subjects=snakemake.params.n_subjects,
    )
