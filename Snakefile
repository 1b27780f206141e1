# fusion3d: a reproducible study of 3D MRI-PET fusion (DC2Fusion / DCFB) on ADNI.
# Table of contents only; the stages live in workflow/rules/, the code in src/fusion3d/.
from snakemake.utils import min_version

min_version("9.0")


# The synthetic default study, only when no --configfile is given: a study's config stands
# on its own, and keys it leaves out take the schema's defaults (workflow/rules/common.smk
# resolves and checks the config once: fusion3d.config.resolve).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/bids.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/evaluate_pass.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/viewer.smk"


# Jobs of seconds that read tables or a handful of images (measured in
# results/benchmarks/{qc,split,tables,figures}/) run where Snakemake runs, not as cluster
# jobs: a SLURM job costs more in scheduling and status polling than they compute. Every
# job that reads images of all subjects (qc_accuracy, qc_montage, provenance) stays a job.
localrules:
    all,
    qc_table,
    split,
    evaluate,
    tables,
    volume_protocol,
    suite_protocol,
    paper_comparison,
    figure_fusion_panel,
    figure_metric_boxes,
    figure_training_curves,
    front_page,


rule all:
    default_target: True
    input:
        get_final_outputs(),
        dry_run_summary,
