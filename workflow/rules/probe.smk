# Stage 7: does a fused image keep the diagnosis? The regional means of every method's fused
# volumes (each network per seed), of the T1 and of the PET, then one cross-validated probe
# of them all on the same folds (fusion3d.probe; docs/probe.md).


rule probe_features:
    input:
        index=f"{R}/fused/{{method}}/index.tsv",
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        features=f"{R}/probe/features/{{method}}.tsv",
    log:
        f"{R}/logs/probe/features/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/probe/features/{{method}}.tsv"
    wildcard_constraints:
        method="|".join(f3d.CLASSIC_METHODS),
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


rule probe_features_seed:
    input:
        index=f"{R}/fused/{{method}}/seed-{{seed}}/index.tsv",
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        features=f"{R}/probe/features/{{method}}/seed-{{seed}}.tsv",
    log:
        f"{R}/logs/probe/features/{{method}}/seed-{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/probe/features/{{method}}/seed-{{seed}}.tsv"
    wildcard_constraints:
        method="|".join(f3d.NETWORK_METHODS),
        seed=r"\d+",
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


rule probe_features_source:
    """The references' features: the model-grid T1 or PET the methods fused."""
    input:
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        features=f"{R}/probe/features/{{source}}.tsv",
    log:
        f"{R}/logs/probe/features/{{source}}.log",
    benchmark:
        f"{R}/benchmarks/probe/features/{{source}}.tsv"
    wildcard_constraints:
        source="t1|pet",
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
