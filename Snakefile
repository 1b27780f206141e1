# fusion3d: a reproducible study of 3D MRI-PET fusion (DC2Fusion / DCFB) on ADNI.
# Table of contents only; the stages live in workflow/rules/, the code in src/fusion3d/.
from snakemake.utils import min_version

from fusion3d.workflow import validate_config

min_version("9.0")


configfile: "config/config.yaml"


# One line per problem (the key, what was expected, what was found), then the defaults.
validate_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")


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
include: "workflow/rules/evaluate_sources.smk"
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
    evaluate_seed,
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
