# Stage 6: metrics of every method on every subject (three protocols; each run of a method:
# a network once per seed), then the study's tables (values averaged over seeds per
# subject, spread across seeds).


rule evaluate:
    input:
        index=f"{R}/fused/{{method}}/{{run}}/index.tsv",
        split=f"{R}/split/split.tsv",
        passes=lambda w: pass_tables(R, len(subject_ids())),
    output:
        metrics=f"{R}/metrics/{{method}}/{{run}}.tsv",
    log:
        f"{R}/logs/evaluate/{{method}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{method}}/{{run}}.tsv"
    conda:
        conda_env("evaluate")
    threads: THREADS["evaluate"]
    resources:
        mem_mb=3000,
        runtime=30 if SOURCE == "synthetic" else 240,
    params:
        protocols=config["evaluate"]["protocols"],
        seed=lambda w: run_seed(w.run),
    script:
        "../scripts/evaluate.py"


rule tables:
    input:
        metrics=get_all_metrics,
    output:
        long=f"{R}/tables/metrics_long.tsv",
        table1_csv=f"{R}/tables/table1.csv",
        table1_md=f"{R}/tables/table1.md",
        table1_tex=f"{R}/tables/table1.tex",
        stats=report(
            f"{R}/tables/wilcoxon_holm.tsv",
            caption="../report/stats.rst",
            category="Tables",
        ),
        by_group=f"{R}/tables/by_group.tsv",
    log:
        f"{R}/logs/evaluate/tables.log",
    benchmark:
        f"{R}/benchmarks/tables/tables.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        reference=config["evaluate"]["reference"],
        notes=TABLE1_NOTES,
    script:
        "../scripts/tables.py"


# Table 1 and the box plots of the 3D volume protocol, beside the paper protocol's.
rule volume_protocol:
    input:
        long=f"{R}/tables/metrics_long.tsv",
    output:
        table_csv=f"{R}/tables/table1_volume.csv",
        table_md=f"{R}/tables/table1_volume.md",
        table_tex=f"{R}/tables/table1_volume.tex",
        png=report(
            f"{R}/figures/metric_boxes_volume.png",
            caption="../report/volume_protocol.rst",
            category="Figures",
        ),
        pdf=f"{R}/figures/metric_boxes_volume.pdf",
    log:
        f"{R}/logs/evaluate/volume_protocol.log",
    benchmark:
        f"{R}/benchmarks/tables/volume_protocol.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        reference=config["evaluate"]["reference"],
    script:
        "../scripts/volume_protocol.py"


rule suite_protocol:
    """Table 1 of the suite2d protocol (the 2D fusion field's metric suite), beside the paper's."""
    input:
        long=f"{R}/tables/metrics_long.tsv",
    output:
        table_csv=f"{R}/tables/table1_suite2d.csv",
        table_md=f"{R}/tables/table1_suite2d.md",
        table_tex=f"{R}/tables/table1_suite2d.tex",
    log:
        f"{R}/logs/evaluate/suite_protocol.log",
    benchmark:
        f"{R}/benchmarks/tables/suite_protocol.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        reference=config["evaluate"]["reference"],
    script:
        "../scripts/suite_protocol.py"


rule provenance:
    """Git commit, resolved config, checksums of the inputs, and per rule the environment its
    jobs recorded (interpreter, package versions, package data, binaries, CUDA)."""
    input:
        unpack(get_ingest_inputs),
        pairs=f"{R}/ingest/pairs.tsv",
        study=get_study_outputs,
    output:
        provenance=f"{R}/provenance.json",
    log:
        f"{R}/logs/provenance.log",
    benchmark:
        f"{R}/benchmarks/provenance/provenance.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    params:
        config=config,
        workflow_dir=workflow.basedir,
        logs_dir=f"{R}/logs",
    script:
        "../scripts/provenance.py"


rule paper_comparison:
    """The paper's Table 1 beside ours (paper protocol, test split, 95 % CI)."""
    input:
        long=f"{R}/tables/metrics_long.tsv",
    output:
        tsv=f"{R}/tables/paper_vs_ours.tsv",
        md=f"{R}/tables/paper_vs_ours.md",
        png=report(
            f"{R}/figures/paper_vs_ours.png",
            caption="../report/paper_vs_ours.rst",
            category="Figures",
        ),
        pdf=f"{R}/figures/paper_vs_ours.pdf",
    log:
        f"{R}/logs/evaluate/paper_comparison.log",
    benchmark:
        f"{R}/benchmarks/tables/paper_comparison.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/paper_comparison.py"
