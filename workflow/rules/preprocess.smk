# Stage 2: per-subject preprocessing (N4, brain extraction, PET -> T1 -> MNI, SUVR, model grid, QC).
# Rules of one subject share group "subject" so that a cluster runs them as one job.


rule preprocess:
    input:
        unpack(get_pair_images),
    output:
        # the T1 -> MNI warp field exists only with nonlinear registration
        **(
            {"xfm_t1_mni_warp": preprocessed("xfm_t1_mni_warp")}
            if config["preprocess"]["t1_to_mni"] == "syn"
            else {}
        ),
        t1_mni=preprocessed("t1_mni"),
        pet_mni=preprocessed("pet_mni"),
        mask_mni=preprocessed("mask_mni"),
        mri=preprocessed("t1_model"),
        pet=preprocessed("pet_model"),
        mask=preprocessed("mask_model"),
        xfm_t1_mni=preprocessed("xfm_t1_mni"),
        xfm_pet_t1=preprocessed("xfm_pet_t1"),
        qc=preprocessed("qc_json"),
        # not in the report one by one (0.4 MB each: 270 MB for 660 subjects); the report has
        # them in the QC montage and in the viewer pages it embeds (docs/benchmarks.md)
        qc_png=preprocessed("qc_png"),
    log:
        f"{R}/logs/preprocess/{{subject}}.log",
    benchmark:
        f"{R}/benchmarks/preprocess/{{subject}}.tsv"
    group:
        "subject"
    conda:
        conda_env("preprocess")
    threads: THREADS["preprocess"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        out_dir=lambda w: f"{R}/preprocess/{w.subject}",
        # the preprocess keys, the free-form options, and preprocess.qc.bounds as qc_bounds
        options=lambda w: {
            **config["preprocess"]["options"],
            **{
                k: v
                for k, v in config["preprocess"].items()
                if k not in ("options", "on_flag", "qc")
            },
            "qc_bounds": {
                **config["preprocess"]["options"].get("qc_bounds", {}),
                **config["preprocess"]["qc"]["bounds"],
            },
        },
    script:
        "../scripts/preprocess.py"


rule qc_table:
    """Every QC figure (qc.tsv) and every flag (flags.tsv): absolute, and outliers of the cohort."""
    input:
        qc=get_all_qc,
    output:
        qc=f"{R}/qc/qc.tsv",
        flags=f"{R}/qc/flags.tsv",
    log:
        f"{R}/logs/preprocess/qc_table.log",
    benchmark:
        f"{R}/benchmarks/qc/qc_table.tsv"
    conda:
        conda_env("preprocess")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cohort_max_z=config["preprocess"]["qc"]["cohort_max_z"],
        cohort_min_subjects=config["preprocess"]["qc"]["cohort_min_subjects"],
        storm_share=config["preprocess"]["qc"]["storm_share"],
        on_flag=config["preprocess"]["on_flag"],
    script:
        "../scripts/qc_table.py"


rule qc_accuracy:
    """Synthetic cohort only: preprocessing accuracy against the generator's ground truth."""
    input:
        cohort=f"{R}/synthetic/cohort.json",
        pairs=f"{R}/ingest/pairs.tsv",
        mask_mni=get_all_preprocessed("mask_mni"),
        xfm_t1_mni=get_all_preprocessed("xfm_t1_mni"),
        xfm_pet_t1=get_all_preprocessed("xfm_pet_t1"),
    output:
        accuracy=f"{R}/qc/accuracy.tsv",
    log:
        f"{R}/logs/preprocess/qc_accuracy.log",
    benchmark:
        f"{R}/benchmarks/qc/qc_accuracy.tsv"
    conda:
        conda_env("preprocess")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    script:
        "../scripts/qc_accuracy.py"
