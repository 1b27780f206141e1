# Shared definitions: the resolved config, the subject table, and every input function.
from pathlib import Path

from fusion3d.config import classic_of, network_train_config, networks_of, resolve
from fusion3d.methods import (
    CLASSIC_METHODS,
    DETERMINISTIC_RUN,
    NETWORK_METHODS,
    PAPER_METHODS,
    RUN_PATTERN,
    method_runs,
    run_name,
    run_seed,
)
from fusion3d.evaluation.shards import pass_tables
from fusion3d.jobs import training_memory_mb
from fusion3d.preflight import parameter_counts, study_summary, write_study_summary
from fusion3d.preprocess import outputs as preprocess_outputs
from fusion3d.subjects import SUBJECT_PATTERN, read_pairs_cached

# The one resolution of the config: schema problems one line each, every default from the
# schema, a models entry for every network, every cross-key check (fusion3d.config).
resolve(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

R = config["results"]
SOURCE = config["cohort"]["source"]
METHODS = list(config["methods"])
NETWORKS = networks_of(config)
CLASSIC = classic_of(config)
# GPUs are a resource switched by config: `resources.gpu` for training and inference (one
# GPU each), `resources.gpus` GPUs for training (N > 1: torchrun, data-parallel).
GPU = 1 if config["resources"]["gpu"] else 0
TRAIN_GPUS = config["resources"]["gpus"] if GPU else 0
THREADS = config["threads"]
# Every network is trained once per seed; every method's outputs live under
# <stage>/<method>/<run>/, a run being seed-<n> for a network and DETERMINISTIC_RUN for a
# classic method (fusion3d.methods). Table 1 averages each subject's values over the seeds.
SEEDS = [int(s) for s in config["train"]["seeds"]]
RUNS = method_runs(METHODS, SEEDS)
# The diagnostic probe (workflow/rules/probe.smk): one feature table per source image (T1,
# PET) and per run of every method; Table 1's note points to its results.
# With probe.t1_volumes, a third source: the T1's regional grey-matter volumes (t1vol).
PROBE = config["probe"]["enabled"]
PROBE_VOLUMES = PROBE and config["probe"]["t1_volumes"]
PROBE_SOURCES = ["t1", "pet"] + (["t1vol"] if PROBE_VOLUMES else [])
PROBE_FEATURE_SETS = PROBE_SOURCES + [f"{m}/{run}" for m, run in RUNS] if PROBE else []
TABLE1_NOTES = (
    [
        "Whether each method's fused images keep the diagnosis "
        f"({', '.join(config['probe']['tasks'])}): tables/probe.tsv, figures/probe_auc.png "
        "and figures/probe_roc.png (the probe stage, docs/probe.md)."
    ]
    if PROBE
    else []
)

_COHORT = {}


_SUMMARY = {}


def study_text():
    """The pre-flight summary (fusion3d.preflight.study_summary), computed once. Parameter
    counts where torch is importable in the driver; else the summary says that the train
    job counts them (a Snakemake-only driver, envs/snakemake.yaml)."""
    if "text" not in _SUMMARY:
        _SUMMARY["text"] = study_summary(
            config,
            {n: network_train_config(config, n, SEEDS[0]) for n in NETWORKS},
            parameter_counts(config, NETWORKS),
        )
    return _SUMMARY["text"]


# What the study will run, printed and written to <results>/study.txt before the first job.
onstart:
    write_study_summary(study_text(), f"{R}/study.txt")


def dry_run_summary(wildcards):
    """Input function of the target (no input). On a dry run, which runs no onstart, it
    prints the pre-flight summary once, while the DAG is built."""
    if workflow.dryrun and not _SUMMARY.get("printed"):
        print(study_text(), end="", flush=True)
        _SUMMARY["printed"] = True
    return []


def adni_cohort():
    """The resolved and validated real download (once): a bad manifest stops the run while the
    DAG is built, before any job starts. Lazy, so that targets that do not need the download
    (e.g. cohort_search) run before it exists."""
    if not _COHORT:
        from fusion3d.ingest.manifest import read_manifests
        from fusion3d.ingest.sources import cohort_inputs

        _COHORT.update(cohort_inputs(config))
        read_manifests(_COHORT["manifests"])
    return _COHORT


wildcard_constraints:
    subject=SUBJECT_PATTERN,
    method="|".join(METHODS),
    run=RUN_PATTERN,


def conda_env(stage):
    """Path of a stage's conda environment file, relative to the rule files."""
    return f"../../envs/{stage}.yaml"


def get_ingest_inputs(wildcards):
    if SOURCE == "synthetic":
        return {"cohort": f"{R}/synthetic/cohort.json"}
    if SOURCE == "bids":
        from fusion3d.ingest.sources import bids_inputs

        return bids_inputs(config)
    cohort = adni_cohort()
    inputs = {"manifests": cohort["manifests"]}
    if cohort["adnimerge"]:
        inputs["adnimerge"] = cohort["adnimerge"]
    if cohort["image_ids"]:
        inputs["image_ids"] = cohort["image_ids"]
    return inputs


def pairs_table():
    """The subject table written by the ingest checkpoint (re-evaluated after it ran)."""
    return read_pairs_cached(checkpoints.ingest.get().output.pairs)


def subject_ids():
    return list(pairs_table()["subject_id"])


def get_pair_images(wildcards):
    table = pairs_table()
    row = table[table["subject_id"] == wildcards.subject]
    if row.empty:
        raise ValueError(f"subject {wildcards.subject} is not in {R}/ingest/pairs.tsv")
    return {"mri": row["mri_path"].iloc[0], "pet": row["pet_path"].iloc[0]}


def preprocessed(key, subject="{subject}"):
    """Path of a per-subject preprocessing output by its key in fusion3d.preprocess.outputs,
    e.g. preprocessed('t1_model')."""
    return str(
        preprocess_outputs.subject_file(f"{R}/preprocess/{subject}", subject, key)
    )


MODEL_INPUTS = preprocess_outputs.MODEL_KEYS


def get_all_preprocessed(key):
    """Input function: one preprocessing output (by key) of every subject, in pairs.tsv order."""
    return lambda wildcards: [preprocessed(key, s) for s in subject_ids()]


get_all_qc = get_all_preprocessed("qc_json")
get_all_qc_png = get_all_preprocessed("qc_png")


def get_all_model_inputs(wildcards):
    return [preprocessed(kind, s) for s in subject_ids() for kind in MODEL_INPUTS]


def train_mem_mb(wildcards, input):
    """Room for every subject's model-grid pair (the memory-mapped cache stays in memory)."""
    n_subjects = len(input.images) // len(MODEL_INPUTS)
    return training_memory_mb(n_subjects, config["preprocess"]["grid"])


def first_run(method):
    """The run of a method that the figures and the viewer show (a network's first seed)."""
    return run_name(SEEDS[0]) if method in NETWORKS else DETERMINISTIC_RUN


def fused_index(method, run=None):
    """The fused index of one run of a method (its first run when not given)."""
    return f"{R}/fused/{method}/{run or first_run(method)}/index.tsv"


def get_fused_indexes(wildcards):
    """One fused index per method (its first run) for the figures and the viewer."""
    return {m: fused_index(m) for m in METHODS}


def get_all_metrics(wildcards):
    """The metric tables of every run of every method."""
    return [f"{R}/metrics/{m}/{run}.tsv" for m, run in RUNS]


def probe_feature_tables(wildcards):
    """The probe's feature tables, in PROBE_FEATURE_SETS order."""
    return [f"{R}/probe/features/{key}.tsv" for key in PROBE_FEATURE_SETS]


def probe_source_inputs(wildcards):
    """What a source's feature table reads besides the split: every subject's model-grid
    images (t1, pet), or every subject's regional GM volumes (t1vol)."""
    if wildcards.source == "t1vol":
        return {"volumes": [f"{R}/probe/volumes/{s}.tsv" for s in subject_ids()]}
    return {"images": get_all_model_inputs(wildcards)}


def get_histories(wildcards):
    return [f"{R}/train/{m}/{run}/history.csv" for m, run in RUNS if m in NETWORKS]


def history_labels():
    return [f"{m} seed {run_seed(run)}" for m, run in RUNS if m in NETWORKS]


def get_final_outputs():
    outputs = [
        f"{R}/ingest/pairs.tsv",
        f"{R}/qc/qc.tsv",
        f"{R}/split/split.tsv",
        f"{R}/tables/metrics_long.tsv",
        f"{R}/tables/table1.md",
        f"{R}/tables/wilcoxon_holm.tsv",
        f"{R}/tables/by_group.tsv",
        f"{R}/figures/fusion_panel.png",
        f"{R}/figures/metric_boxes.png",
        f"{R}/figures/qc_montage.pdf",
        f"{R}/provenance.json",
    ]
    if NETWORKS:
        outputs.append(f"{R}/figures/training_curves.png")
    if set(METHODS) & set(PAPER_METHODS):
        outputs += [f"{R}/tables/paper_vs_ours.md", f"{R}/figures/paper_vs_ours.png"]
    # Table 1 of the 3D volume protocol and its box plots, beside the paper protocol's
    if "volume" in config["evaluate"]["protocols"]:
        outputs += [
            f"{R}/tables/table1_volume.md",
            f"{R}/figures/metric_boxes_volume.png",
        ]
    # Table 1 of the 2D field's suite (MMIF-CDDFuse's evaluator), every method a row
    if "suite2d" in config["evaluate"]["protocols"]:
        outputs.append(f"{R}/tables/table1_suite2d.md")
    if SOURCE == "synthetic":
        outputs.append(f"{R}/qc/accuracy.tsv")
    # does a fused image keep the diagnosis? (workflow/rules/probe.smk)
    if PROBE:
        outputs += [f"{R}/tables/probe.tsv", f"{R}/figures/probe_auc.png"]
    # the viewer pages and the report's front page (workflow/rules/viewer.smk)
    outputs += [f"{R}/viewer", f"{R}/report/front_page.rst"]
    # the preprocessing as a BIDS derivative (workflow/rules/bids.smk)
    outputs.append(f"{R}/derivatives/preprocess")
    return outputs


def get_study_outputs(wildcards):
    """Every final output of the study but provenance.json: the provenance job runs after every
    job whose environment record (<log stem>.versions.json beside its log) it collects, and
    again whenever one of them reruns."""
    return [p for p in get_final_outputs() if p != f"{R}/provenance.json"]


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
    if set(METHODS) & set(PAPER_METHODS):
        inputs["paper_vs_ours"] = f"{R}/tables/paper_vs_ours.md"
    if PROBE:
        inputs["probe"] = f"{R}/tables/probe.tsv"
    return inputs


def front_page_figures():
    """The report's figures of this study, by file name (fusion3d.report.frontpage.FIGURES)."""
    names = ["fusion_panel.png", "metric_boxes.png"]
    if set(METHODS) & set(PAPER_METHODS):
        names.append("paper_vs_ours.png")
    if NETWORKS:
        names.append("training_curves.png")
    if PROBE:
        names += ["probe_auc.png", "probe_roc.png"]
    return names + ["page-001.png"]
