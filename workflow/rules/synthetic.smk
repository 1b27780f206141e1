# Stage 0 (default study only): the embedded synthetic cohort, shaped like a LONI IDA download.


rule synthetic_cohort:
    output:
        cohort=f"{R}/synthetic/cohort.json",
    log:
        f"{R}/logs/synthetic/synthetic_cohort.log",
    benchmark:
        f"{R}/benchmarks/synthetic/synthetic_cohort.tsv"
    conda:
        conda_env("ingest")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        out_dir=lambda w, output: str(Path(output.cohort).parent),
        n_subjects=config["cohort"]["synthetic"]["n_subjects"],
        seed=config["cohort"]["synthetic"]["seed"],
        quirks=config["cohort"]["synthetic"]["quirks"],
        diagnosis_effects=config["cohort"]["synthetic"]["diagnosis_effects"],
        pet=config["cohort"]["synthetic"]["pet"],
        regional_uptake_variation=config["cohort"]["synthetic"][
            "regional_uptake_variation"
        ],
    script:
        "../scripts/synthetic_cohort.py"
