# Stage 2: per-subject preprocessing (N4, brain extraction, PET -> T1 -> MNI, SUVR, model grid, QC).
# Rules of one subject share group "subject" so that a cluster runs them as one job.


rule preprocess:
    input:
        unpack(get_pair_images),
    output:
        t1_mni=preprocessed("space-MNI152_desc-preproc_T1w.nii.gz"),
        pet_mni=preprocessed("space-MNI152_desc-suvr_pet.nii.gz"),
        mask_mni=preprocessed("space-MNI152_desc-brain_mask.nii.gz"),
        mri=preprocessed("desc-model_T1w.nii.gz"),
        pet=preprocessed("desc-model_pet.nii.gz"),
        mask=preprocessed("desc-model_mask.nii.gz"),
        qc=preprocessed("qc.json"),
        qc_png=report(
            preprocessed("qc.png"),
            caption="../report/qc_subject.rst",
            category="Quality control",
            subcategory="Per subject",
            labels={"subject": "{subject}"},
        ),
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
    script:
        "../scripts/qc_table.py"


rule qc_accuracy:
    """Synthetic cohort only: preprocessing accuracy against the generator's ground truth."""
    input:
        qc=get_all_qc,
        cohort=f"{R}/synthetic/cohort.json",
        pairs=f"{R}/ingest/pairs.tsv",
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
    params:
        preprocess_dir=f"{R}/preprocess",
        truth_dir=f"{R}/synthetic/truth",
    script:
        "../scripts/qc_accuracy.py"
