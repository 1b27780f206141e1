# Stage 8: one self-contained interactive viewer page per subject (T1, PET, the methods'
# fused volumes on the model grid for the subjects of viewer.fused_splits, QC figures and
# metrics) in viewer/; the pages that viewer.report names, also in report/viewer/ (hard
# links), the report's Viewer category; and the report's front page
# (workflow/report/workflow.rst includes it), which links the other pages.


rule viewer:
    input:
        unpack(get_fused_indexes),
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
        qc=get_all_qc,
        qc_png=get_all_qc_png,
        flags=f"{R}/qc/flags.tsv",
        long=f"{R}/tables/metrics_long.tsv",
    output:
        pages=directory(f"{R}/viewer"),
        report_pages=report(
            directory(f"{R}/report/viewer"),
            patterns=["{subject}.html"],
            caption="../report/viewer.rst",
            category="Viewer",
            labels={"subject": "{subject}"},
        ),
    log:
        f"{R}/logs/viewer/viewer.log",
    benchmark:
        f"{R}/benchmarks/viewer/viewer.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, input: 10 + len(input.qc) // 60,
    params:
        methods=METHODS,
        fused_splits=config["viewer"]["fused_splits"],
        report=config["viewer"]["report"],
        n_figure_subjects=config["figures"]["n_subjects"],
    script:
        "../scripts/viewer.py"


rule front_page:
    input:
        unpack(get_front_page_inputs),
        report_pages=f"{R}/report/viewer",
    output:
        rst=f"{R}/report/front_page.rst",
    log:
        f"{R}/logs/viewer/front_page.log",
    benchmark:
        f"{R}/benchmarks/viewer/front_page.tsv"
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        figures=front_page_figures(),
    script:
        "../scripts/front_page.py"
