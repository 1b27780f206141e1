# BIDS out: the per-subject preprocessing outputs as a BIDS derivative beside the raw tree
# that ingest writes (results/bids); both pass the official BIDS validator (docs/outputs.md).


rule bids_derivative:
    """Link every subject's preprocessing outputs into derivatives/preprocess (BIDS layout)."""
    input:
        pairs=f"{R}/ingest/pairs.tsv",
        t1=get_all_preprocessed("t1_mni"),
        pet=get_all_preprocessed("pet_mni"),
        mask=get_all_preprocessed("mask_mni"),
        model=get_all_preprocessed("t1_model"),
        qc=get_all_preprocessed("qc_json"),
    output:
        derivative=directory(f"{R}/derivatives/preprocess"),
    log:
        f"{R}/logs/preprocess/bids_derivative.log",
    conda:
        conda_env("ingest")
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        preprocess_dir=f"{R}/preprocess",
    script:
        "../scripts/bids_derivative.py"
