"""Write provenance.json: git commit, resolved config, input checksums and, per rule, the
environment its jobs recorded beside their logs (rule provenance)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.provenance import write_provenance

    from fusion3d.ingest.sources import read_cohort_spec

    inputs = []
    for key, value in snakemake.input.items():
        if key in ("pairs", "study"):  # the study's outputs order the job; they are not inputs
            continue
        paths = [value] if isinstance(value, str) else list(value)
        inputs.extend(paths)
        if key == "cohort":  # the synthetic download: checksum what ingest read from it
            spec = read_cohort_spec(value)
            inputs.extend(spec["manifests"])
            inputs.extend(p for p in (spec.get("adnimerge"), spec.get("image_ids")) if p)
    write_provenance(
        snakemake.output.provenance,
        config=snakemake.params.config,
        workflow_dir=snakemake.params.workflow_dir,
        inputs=inputs,
        pairs_tsv=snakemake.input.pairs,
        logs_dir=snakemake.params.logs_dir,
    )
    log.info("provenance written")
