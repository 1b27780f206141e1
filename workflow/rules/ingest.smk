# Stage 1: ingest the download (collection CSVs + ADNI/ tree + ADNIMERGE) into T1 + FDG pairs.
# A checkpoint: the subjects of every later stage are the rows of pairs.tsv.


checkpoint ingest:
    input:
        unpack(get_ingest_inputs),
    output:
        pairs=f"{R}/ingest/pairs.tsv",
        excluded=f"{R}/ingest/excluded.tsv",
        missing=f"{R}/ingest/missing.tsv",
        header_flags=f"{R}/ingest/header_flags.tsv",
        bids=directory(f"{R}/bids"),
    log:
        f"{R}/logs/ingest/ingest.log",
    benchmark:
        f"{R}/benchmarks/ingest/ingest.tsv"
    conda:
        conda_env("ingest")
    threads: THREADS["ingest"]
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        # only the sections ingest reads: a key added elsewhere (e.g. a new schema default)
        # must not rerun ingest, and with it the whole study (params are a rerun trigger)
        config={"cohort": config["cohort"], "ingest": config["ingest"]},
        relative_to=".",
    script:
        "../scripts/ingest_bids.py" if SOURCE == "bids" else "../scripts/ingest.py"


rule cohort_search:
    """LONI IDA advanced-search strings for the configured cohort list, in batches."""
    input:
        image_ids=config["cohort"]["image_ids"] or [],
    output:
        batches=f"{R}/cohort/ida_search_batches.txt",
    log:
        f"{R}/logs/ingest/cohort_search.log",
    conda:
        conda_env("ingest")
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        batch_size=config["cohort"]["search_batch_size"],
    script:
        "../scripts/cohort_search.py"
