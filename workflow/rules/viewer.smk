# Stage 8: one self-contained interactive viewer page per subject (T1, PET, every method's
# fused volume on the model grid, QC figures and metrics), in the report's Viewer category;
# and the report's front page (workflow/report/workflow.rst includes it).


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
        pages=report(
            directory(f"{R}/viewer"),
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
    script:
        "../scripts/viewer.py"


rule front_page:
    input:
        unpack(get_front_page_inputs),
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
