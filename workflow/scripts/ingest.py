"""Ingest the download into T1 + FDG pairs (checkpoint ingest)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.ingest.sources import read_cohort_spec
from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)

    from fusion3d.ingest import run_ingest

    cfg = snakemake.params.config
    if cfg["cohort"]["source"] == "synthetic":
        spec = read_cohort_spec(snakemake.input.cohort)
    else:
        spec = {
            "download_dir": cfg["cohort"]["download_dir"],
            "manifests": list(snakemake.input.manifests),
            "adnimerge": snakemake.input.get("adnimerge"),
            "image_ids": snakemake.input.get("image_ids"),
        }
    options = {k: v for k, v in cfg["ingest"].items()}
    options["allow_incomplete_cohort"] = cfg["cohort"]["allow_incomplete"]
    options["relative_to"] = snakemake.params.relative_to
    pairs = run_ingest(
        download_dir=spec["download_dir"],
        manifests=spec["manifests"],
        adnimerge=spec.get("adnimerge"),
        bids_dir=snakemake.output.bids,
        pairs_tsv=snakemake.output.pairs,
        excluded_tsv=snakemake.output.excluded,
        options=options,
        cohort_ids=spec.get("image_ids"),
        missing_tsv=snakemake.output.missing,
        header_flags_tsv=snakemake.output.header_flags,
        threads=snakemake.threads,
        # Snakemake deletes the outputs of a failed job: copies of excluded.tsv and missing.tsv
        # stay beside the log, and the errors point there.
        keep_dir=Path(snakemake.log[0]).parent,
        require_pairs=True,
    )
    log.info("ingest: %d pairs", len(pairs))
