# Stage 7: does a fused image keep the diagnosis? The regional means of every method's fused
# volumes (each run: a network per seed), of the T1 and of the PET, the T1's regional grey-matter
# volumes (probe.t1_volumes), then one cross-validated probe of them all on the same folds
# (fusion3d.probe; docs/probe.md).


rule probe_features:
    input:
        index=f"{R}/fused/{{method}}/{{run}}/index.tsv",
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        features=f"{R}/probe/features/{{method}}/{{run}}.tsv",
    log:
        f"{R}/logs/probe/features/{{method}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/probe/features/{{method}}/{{run}}.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1500,
        runtime=15 if SOURCE == "synthetic" else 60,
    params:
        source=None,
        splits=config["probe"]["splits"],
    script:
        "../scripts/probe_features.py"


rule probe_volumes:
    """One subject's regional grey-matter volumes: Atropos on its MNI-space T1 (fusion3d.probe.volumes)."""
    input:
        t1=preprocessed("t1_mni"),
        mask=preprocessed("mask_mni"),
    output:
        volumes=f"{R}/probe/volumes/{{subject}}.tsv",
    log:
        f"{R}/logs/probe/volumes/{{subject}}.log",
    benchmark:
        f"{R}/benchmarks/probe/volumes/{{subject}}.tsv"
    group:
        "subject"
    conda:
        conda_env("preprocess")
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        t1_to_mni=config["preprocess"]["t1_to_mni"],
    script:
        "../scripts/probe_volumes.py"


rule probe_features_source:
    """The references' features: the model-grid T1 or PET the methods fused (regional means),
    or the T1's regional GM volumes gathered from rule probe_volumes (t1vol)."""
    input:
        unpack(probe_source_inputs),
        split=f"{R}/split/split.tsv",
    output:
        features=f"{R}/probe/features/{{source}}.tsv",
    log:
        f"{R}/logs/probe/features/{{source}}.log",
    benchmark:
        f"{R}/benchmarks/probe/features/{{source}}.tsv"
    wildcard_constraints:
        source="t1|pet|t1vol",
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1500,
        runtime=15 if SOURCE == "synthetic" else 60,
    params:
        source=lambda w: w.source,
        splits=config["probe"]["splits"],
    script:
        "../scripts/probe_features.py"


rule probe:
    input:
        features=probe_feature_tables,
        split=f"{R}/split/split.tsv",
    output:
        table=report(
            f"{R}/tables/probe.tsv",
            caption="../report/probe.rst",
            category="Probe",
        ),
        folds=f"{R}/probe/folds.tsv",
        scores=f"{R}/probe/scores.tsv",
        auc_png=report(
            f"{R}/figures/probe_auc.png",
            caption="../report/probe_auc.rst",
            category="Probe",
        ),
        auc_pdf=f"{R}/figures/probe_auc.pdf",
        roc_png=report(
            f"{R}/figures/probe_roc.png",
            caption="../report/probe_roc.rst",
            category="Probe",
        ),
    log:
        f"{R}/logs/probe/probe.log",
    benchmark:
        f"{R}/benchmarks/probe/probe.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30 if SOURCE == "synthetic" else 240,
    params:
        feature_sets=PROBE_FEATURE_SETS,
        settings=config["probe"],
    script:
        "../scripts/probe.py"
