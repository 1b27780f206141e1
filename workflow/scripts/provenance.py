"""Write provenance.json: versions, git commit, resolved config, input checksums (rule provenance)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.workflow import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.provenance import write_provenance

    inputs = [p for key, p in snakemake.input.items() if key != "pairs"]
    write_provenance(
        snakemake.output.provenance,
        config=snakemake.params.config,
        workflow_dir=snakemake.params.workflow_dir,
        inputs=inputs,
        pairs_tsv=snakemake.input.pairs,
    )
    log.info("provenance written")
