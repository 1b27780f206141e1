# Stage 7: the study's figures, one rule each, all in the Snakemake report.


rule figure_fusion_panel:
    input:
        unpack(get_fused_indexes),
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        png=report(
            f"{R}/figures/fusion_panel.png",
            caption="../report/fusion_panel.rst",
            category="Figures",
        ),
        pdf=f"{R}/figures/fusion_panel.pdf",
    log:
        f"{R}/logs/figures/fusion_panel.log",
    benchmark:
        f"{R}/benchmarks/figures/fusion_panel.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        n_subjects=config["figures"]["n_subjects"],
        methods=METHODS,
    script:
        "../scripts/figure_fusion_panel.py"


rule figure_metric_boxes:
    input:
        long=f"{R}/tables/metrics_long.tsv",
    output:
        png=report(
            f"{R}/figures/metric_boxes.png",
            caption="../report/metric_boxes.rst",
            category="Figures",
        ),
        pdf=f"{R}/figures/metric_boxes.pdf",
    log:
        f"{R}/logs/figures/metric_boxes.log",
    benchmark:
        f"{R}/benchmarks/figures/metric_boxes.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/figure_metric_boxes.py"


rule figure_training_curves:
    input:
        histories=get_histories,
    output:
        png=report(
            f"{R}/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Figures",
        ),
        pdf=f"{R}/figures/training_curves.pdf",
    log:
        f"{R}/logs/figures/training_curves.log",
    benchmark:
        f"{R}/benchmarks/figures/training_curves.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        labels=history_labels(),
    script:
        "../scripts/figure_training_curves.py"


rule figure_qc_montage:
    input:
        qc_png=get_all_qc_png,
    output:
        pages=report(
            directory(f"{R}/figures/qc_montage"),
            patterns=["{page}.png"],
            caption="../report/qc_montage.rst",
            category="Quality control",
        ),
        pdf=f"{R}/figures/qc_montage.pdf",
    log:
        f"{R}/logs/figures/qc_montage.log",
    benchmark:
        f"{R}/benchmarks/figures/qc_montage.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        per_page=config["figures"]["qc_per_page"],
    script:
        "../scripts/figure_qc_montage.py"
