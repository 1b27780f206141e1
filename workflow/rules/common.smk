# Shared definitions: the validated config, the subject table, and every input function.
from pathlib import Path

from fusion3d import workflow as f3d
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

# Checks that need more than the schema, done before any job starts.
for _network in NETWORKS:
    if _network not in config["models"]:
        raise ValueError(
            f"config key models.{_network} is missing: method {_network} needs a network configuration"
        )
if config["evaluate"]["reference"] not in METHODS:
    raise ValueError(
        f"config key evaluate.reference: {config['evaluate']['reference']!r} is not one of methods"
    )
_fractions = config["split"]["fractions"]
if abs(sum(_fractions.get(k, 0.0) for k in ("train", "val", "test")) - 1.0) > 1e-6:
    raise ValueError("config key split.fractions: train + val + test must add up to 1")

_COHORT = {}


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


def get_fused_indexes(wildcards):
    return {m: f"{R}/fused/{m}/index.tsv" for m in METHODS}


def get_histories(wildcards):
    return [f"{R}/train/{n}/history.csv" for n in NETWORKS]


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
    if SOURCE == "synthetic":
        outputs.append(f"{R}/qc/accuracy.tsv")
    return outputs
