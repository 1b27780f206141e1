# Shared definitions: the validated config, the subject table, and every input function.
import sys
from pathlib import Path

from fusion3d import workflow as f3d
from fusion3d.paper import PAPER_TABLE1
from fusion3d.preprocess import outputs as preprocess_outputs

R = config["results"]
SOURCE = config["cohort"]["source"]
METHODS = list(config["methods"])
NETWORKS = [m for m in METHODS if m in f3d.NETWORK_METHODS]
CLASSIC = [m for m in METHODS if m in f3d.CLASSIC_METHODS]
# GPUs are a resource switched by config: `resources.gpu` for training and inference (one
# GPU each), `resources.gpus` GPUs for training (N > 1: torchrun, data-parallel).
GPU = 1 if config["resources"]["gpu"] else 0
TRAIN_GPUS = config["resources"]["gpus"] if GPU else 0
if config["resources"]["gpus"] > 1 and not GPU:
    raise ValueError(
        "config key resources.gpus: more than one GPU needs resources.gpu: true"
    )
THREADS = config["threads"]
# Every network is trained once per seed (one job per network and seed); Table 1 averages
# each subject's values over the seeds and gives the spread across seeds beside them.
SEEDS = [int(s) for s in config["train"]["seeds"]]
# The diagnostic probe (workflow/rules/probe.smk): one feature table per source image (T1,
# PET), per classic method and per network and seed; Table 1's note points to its results.
PROBE = config["probe"]["enabled"]
PROBE_FEATURE_SETS = (
    ["t1", "pet"] + [f"{n}/seed-{s}" for n in NETWORKS for s in SEEDS] + CLASSIC
    if PROBE
    else []
)
TABLE1_NOTES = (
    [
        "Whether each method's fused images keep the diagnosis "
        f"({', '.join(config['probe']['tasks'])}): tables/probe.tsv, figures/probe_auc.png "
        "and figures/probe_roc.png (the probe stage, docs/probe.md)."
    ]
    if PROBE
    else []
)

# Checks that need more than the schema, done before any job starts.
# Values that cannot work together (grid and networks, GPUs, split sizes, method names).
f3d.check_config_consistency(config)
# A network without a models entry takes its published sizes (DC2Fusion's need the entry:
# its spatial_dims tells the 3D network from the 2D twin).
for _network in NETWORKS:
    if _network not in config["models"]:
        if _network.startswith("dcfb"):
            raise ValueError(
                f"config key models.{_network} is missing: method {_network} needs a network configuration"
            )
        config["models"][_network] = {}
if config["evaluate"]["reference"] not in METHODS:
    raise ValueError(
        f"config key evaluate.reference: {config['evaluate']['reference']!r} is not one of methods"
    )
_fractions = config["split"]["fractions"]
if abs(sum(_fractions.get(k, 0.0) for k in ("train", "val", "test")) - 1.0) > 1e-6:
    raise ValueError("config key split.fractions: train + val + test must add up to 1")

_COHORT = {}


def network_train_config(network, seed):
    """The train config of one network and seed: the keys of train: (less seeds and
    overrides), then train.overrides.<network>, then the seed. Keys left unset take the
    network's published settings (fusion3d.learned.recipes)."""
    common = {
        k: v for k, v in config["train"].items() if k not in ("seeds", "overrides")
    }
    return {
        **common,
        **config["train"]["overrides"].get(network, {}),
        "seed": int(seed),
    }


# Each network's training config (its published settings, then train:, then
# train.overrides.<network>) is resolved now, so a bad key stops the run before any job.
for _network in config["train"]["overrides"]:
    if _network not in NETWORKS:
        raise ValueError(
            f"config key train.overrides.{_network}: {_network!r} is not a network of methods"
        )
for _network in NETWORKS:
    f3d.check_network_config(
        _network, config["models"][_network], network_train_config(_network, SEEDS[0])
    )

# A real cohort that takes the CPU demo's model or training keys (config/config.yaml is
# loaded before any --configfile) is warned at once, naming the keys (docs/configuration.md).
DEMO_KEYS = (
    f3d.demo_keys(
        config,
        dict(workflow.config_settings.overwrite_config),
        f3d.loaded_demo_config(workflow.configfiles),
    )
    if SOURCE == "adni"
    else {}
)
if DEMO_KEYS and workflow.is_main_process:
    print(f3d.demo_warning(DEMO_KEYS), file=sys.stderr)


# What the study will run, printed and written to <results>/study.txt before the first job.
onstart:
    f3d.write_study_summary(
        f3d.study_summary(
            config,
            {n: network_train_config(n, SEEDS[0]) for n in NETWORKS},
            {n: f3d.network_parameters(n, config["models"][n]) for n in NETWORKS},
            DEMO_KEYS,
        ),
        f"{R}/study.txt",
    )


def adni_cohort():
    """The resolved and validated real download (once): a bad manifest stops the run while the
    DAG is built, before any job starts. Lazy, so that targets that do not need the download
    (e.g. cohort_search) run before it exists."""
    if not _COHORT:
        from fusion3d.ingest import read_manifests

        _COHORT.update(f3d.cohort_inputs(config))
        read_manifests(_COHORT["manifests"])
    return _COHORT


wildcard_constraints:
    subject=f3d.SUBJECT_PATTERN,
    method="|".join(METHODS),


def conda_env(stage):
    """Path of a stage's conda environment file, relative to the rule files."""
    return f"../../envs/{stage}.yaml"


def get_ingest_inputs(wildcards):
    if SOURCE == "synthetic":
        return {"cohort": f"{R}/synthetic/cohort.json"}
    if SOURCE == "bids":
        from fusion3d.ingest.bids_source import bids_inputs

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
    return f3d.read_pairs_cached(checkpoints.ingest.get().output.pairs)


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
    return f3d.training_memory_mb(n_subjects, config["preprocess"]["grid"])


def fused_index(method, seed=None):
    """The fused index of a method: per seed for a network (first seed when not given)."""
    if method in NETWORKS:
        return f"{R}/fused/{method}/seed-{SEEDS[0] if seed is None else seed}/index.tsv"
    return f"{R}/fused/{method}/index.tsv"


def get_fused_indexes(wildcards):
    """One fused index per method (a network's first seed) for the figures."""
    return {m: fused_index(m) for m in METHODS}


def get_all_metrics(wildcards):
    """The metric tables of every method, each network once per seed."""
    return [f"{R}/metrics/{m}/seed-{s}.tsv" for m in NETWORKS for s in SEEDS] + [
        f"{R}/metrics/{m}.tsv" for m in CLASSIC
    ]


def probe_feature_tables(wildcards):
    """The probe's feature tables, in PROBE_FEATURE_SETS order."""
    return [f"{R}/probe/features/{key}.tsv" for key in PROBE_FEATURE_SETS]


def get_histories(wildcards):
    return [f"{R}/train/{n}/seed-{s}/history.csv" for n in NETWORKS for s in SEEDS]


def history_labels():
    return [f"{n} seed {s}" for n in NETWORKS for s in SEEDS]


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
    if set(METHODS) & {"swinfuse", "matr", "dilran", "dcfb3d"}:
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
    if PROBE:
        inputs["probe"] = f"{R}/tables/probe.tsv"
    return inputs


def front_page_figures():
    """The report's figures of this study, by file name (fusion3d.frontpage.FIGURES)."""
    names = ["fusion_panel.png", "metric_boxes.png"]
    if set(METHODS) & set(PAPER_TABLE1):
        names.append("paper_vs_ours.png")
    if NETWORKS:
        names.append("training_curves.png")
    if PROBE:
        names += ["probe_auc.png", "probe_roc.png"]
    return names + ["page-001.png"]
