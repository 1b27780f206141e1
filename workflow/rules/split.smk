# Stage 3: a seeded, subject-level, diagnosis-stratified train/val/test split.


rule split:
    input:
        pairs=f"{R}/ingest/pairs.tsv",
        flags=f"{R}/qc/flags.tsv",
    output:
        split=f"{R}/split/split.tsv",
    log:
        f"{R}/logs/split/split.log",
    benchmark:
        f"{R}/benchmarks/split/split.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        split=config["split"],
        on_flag=config["preprocess"]["on_flag"],
        preprocess_dir=f"{R}/preprocess",
    script:
        "../scripts/split.py"
