# Stage 8: one self-contained interactive viewer page per subject (T1, PET, every method's
# fused volume on the model grid, QC figures and metrics), in the report's Viewer category;
# and the report's front page (workflow/report/workflow.rst includes it).
from fusion3d.paper import PAPER_TABLE1


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


def get_front_page_inputs(wildcards):
    """The tables of the front page; paper_vs_ours only where the study compares with the paper."""
    inputs = {
        "pairs": f"{R}/ingest/pairs.tsv",
        "excluded": f"{R}/ingest/excluded.tsv",
        "split": f"{R}/split/split.tsv",
        "flags": f"{R}/qc/flags.tsv",
        "qc": f"{R}/qc/qc.tsv",
        "table1": f"{R}/tables/table1.md",
        "viewer": f"{R}/viewer",
    }
    if set(METHODS) & set(PAPER_TABLE1):
        inputs["paper_vs_ours"] = f"{R}/tables/paper_vs_ours.md"
    return inputs


def front_page_figures():
    """The report's figures of this study, by file name (fusion3d.frontpage.FIGURES)."""
    names = ["fusion_panel.png", "metric_boxes.png"]
    if set(METHODS) & set(PAPER_TABLE1):
        names.append("paper_vs_ours.png")
    if NETWORKS:
        names.append("training_curves.png")
    return names + ["page-001.png"]


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
