"""Helpers shared by the Snakemake rules and their thin scripts.

Everything the rules need beyond file names lives here so that it can be tested: reading the
subject tables, resolving the cohort inputs of a configuration, and sending a script's logging
and stderr to the rule's log file.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from fusion3d.io import read_tsv
from fusion3d.methods import CLASSIC_METHODS, NETWORK_METHODS  # noqa: F401 - for the rules
from fusion3d.preprocess.outputs import subject_file

SUBJECT_PATTERN = r"sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+"
PAIRS_COLUMNS = (
    "participant_id",
    "session_id",
    "ptid",
    "group",
    "mri_path",
    "pet_path",
)


def subject_id(participant_id: str, session_id: str) -> str:
    """The per-subject label used in file names: ``<participant>_<session>``."""
    return f"{participant_id}_{session_id}"


def read_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``ingest/pairs.tsv`` and add a ``subject_id`` column.

    Raises
    ------
    ValueError
        If a required column is missing or a subject appears twice.
    """
    frame = read_tsv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PAIRS_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    frame["subject_id"] = [
        subject_id(p, s) for p, s in zip(frame["participant_id"], frame["session_id"], strict=True)
    ]
    duplicated = frame["subject_id"][frame["subject_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path}: subject listed twice: {', '.join(sorted(set(duplicated)))}")
    return frame


def per_subject(paths: Iterable[str], subject_ids: Iterable[str]) -> dict[str, str]:
    """Match per-subject files (``<subject>/<subject>_<suffix>``) to ``subject_ids``, in order.

    An input function lists one file per subject in the subject table's order; this
    checks that each file name starts with its subject's label.

    Raises
    ------
    ValueError
        If the counts differ or a file name does not belong to its subject.
    """
    paths, subject_ids = [str(p) for p in paths], list(subject_ids)
    if len(paths) != len(subject_ids):
        raise ValueError(f"{len(paths)} files for {len(subject_ids)} subjects")
    for path, sid in zip(paths, subject_ids, strict=True):
        if not Path(path).name.startswith(f"{sid}_"):
            raise ValueError(f"{path}: not a file of subject {sid}")
    return dict(zip(subject_ids, paths, strict=True))


_PAIRS_CACHE: dict[tuple[str, float], pd.DataFrame] = {}


def read_pairs_cached(path: str | os.PathLike) -> pd.DataFrame:
    """:func:`read_pairs`, cached by path and modification time (input functions call it often)."""
    key = (str(path), os.stat(path).st_mtime)
    if key not in _PAIRS_CACHE:
        _PAIRS_CACHE[key] = read_pairs(path)
    return _PAIRS_CACHE[key]


def cohort_inputs(config: dict) -> dict:
    """Resolve the cohort inputs of a validated ``adni`` configuration.

    Returns a dict with ``download_dir``, ``manifests`` (sorted list of existing CSVs),
    ``adnimerge`` and ``image_ids`` (``None`` when not configured).

    Raises
    ------
    ValueError
        Naming the configuration key when a required key is missing or matches no file.
    """
    cohort = config["cohort"]
    if cohort.get("source") != "adni":
        raise ValueError("cohort_inputs() is for cohort.source: adni")
    download = cohort.get("download_dir")
    if not download:
        raise ValueError("config key cohort.download_dir is required when cohort.source is adni")
    if not Path(download).is_dir():
        raise ValueError(f"config key cohort.download_dir: {download} is not a folder")
    patterns = cohort.get("manifests") or []
    if not patterns:
        raise ValueError("config key cohort.manifests is required when cohort.source is adni")
    manifests: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if not found:
            raise ValueError(f"config key cohort.manifests: {pattern} matches no file")
        manifests.extend(found)
    result = {
        "download_dir": download,
        "manifests": sorted(dict.fromkeys(manifests)),
        "adnimerge": cohort.get("adnimerge"),
        "image_ids": cohort.get("image_ids"),
    }
    for key in ("adnimerge", "image_ids"):
        if result[key] and not Path(result[key]).is_file():
            raise ValueError(f"config key cohort.{key}: {result[key]} does not exist")
    return result


def read_cohort_spec(path: str | os.PathLike) -> dict:
    """Read the ``cohort.json`` written by the synthetic rule (same keys as :func:`cohort_inputs`)."""
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    for key in ("download_dir", "manifests"):
        if key not in spec:
            raise ValueError(f"{path}: missing key {key!r}")
    return spec


@contextlib.contextmanager
def script_logging(log_path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send logging and stderr of a rule's script to its log file for the duration of the block.

    A failure is logged with its traceback before it propagates, so the rule's log explains it.
    """
    logger = logging.getLogger("fusion3d")
    if log_path is None:
        logging.basicConfig(level=logging.INFO)
        yield logger
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    handler = logging.StreamHandler(handle)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    old_stderr = sys.stderr
    sys.stderr = handle
    try:
        yield logger
    except BaseException:
        logger.exception("failed")
        raise
    finally:
        sys.stderr = old_stderr
        root.removeHandler(handler)
        handle.close()


def set_threads(threads: int) -> None:
    """Make ``threads`` reach ITK/ANTs, OpenMP/BLAS and torch in this process."""
    threads = max(1, int(threads))
    for name in (
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
    ):
        os.environ[name] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def training_memory_mb(n_subjects: int, grid: int, *, base_mb: int = 6000) -> int:
    """``mem_mb`` of a training job: ``base_mb`` plus every subject's model-grid pair.

    Training streams the pairs from a memory-mapped float32 cache (2 x grid^3 x 4 bytes: 16.8
    MB per subject at 128^3, so 660 subjects add 11,073 MB; Snakemake's ``mem_mb`` is in
    megabytes, 10^6 bytes). The process itself holds a few pairs at a time, but the cache's
    pages count against a job's cgroup memory limit while they are cached: with room for the
    whole cache every epoch after the first reads from memory instead of the disk.
    ``base_mb`` covers the interpreter, torch, the model, its optimizer and one batch (the
    default demo trains in 850 MB; the paper-sized network on CPU at 64^3 peaks at 3.1 GB).
    """
    if n_subjects < 0 or grid < 1:
        raise ValueError(f"n_subjects must be >= 0 and grid >= 1, got {n_subjects}, {grid}")
    return int(base_mb + math.ceil(n_subjects * 2 * grid**3 * 4 / 1e6))


def read_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``split/split.tsv`` (one row per subject, with its split and model-grid images)."""
    frame = read_tsv(path, dtype=str, keep_default_na=False)
    for column in ("subject_id", "split", "group", "model_mri", "model_pet", "model_mask"):
        if column not in frame.columns:
            raise ValueError(f"{path}: missing column {column!r}")
    return frame


#: split.tsv columns of the model-grid images, and their preprocessing output keys.
MODEL_COLUMNS: dict[str, str] = {
    "model_mri": "t1_model",
    "model_pet": "pet_model",
    "model_mask": "mask_model",
}


def split_with_inputs(
    split: pd.DataFrame, images: Iterable[str], splits: tuple[str, ...] = ("train", "val", "test")
) -> pd.DataFrame:
    """The split with the model-grid images of its subjects taken from a job's declared inputs.

    ``images`` are the job's ``snakemake.input`` files (every subject's model-grid MRI, PET
    and mask); each subject in ``splits`` gets the file whose name is its
    :func:`fusion3d.preprocess.outputs.subject_file`, so a job reads only what Snakemake
    gave it.

    Raises
    ------
    ValueError
        If an image of a subject in ``splits`` is not among ``images``.
    """
    by_name = {Path(p).name: str(p) for p in images}
    out = split.copy()
    used = out["split"].isin(splits)
    for column, key in MODEL_COLUMNS.items():
        paths = list(out[column])
        for i in [i for i, flag in enumerate(used) if flag]:
            name = subject_file(".", out["subject_id"].iloc[i], key).name
            if name not in by_name:
                raise ValueError(f"{name}: not among the job's declared inputs")
            paths[i] = by_name[name]
        out[column] = paths
    return out


def split_items(
    split: pd.DataFrame, splits: tuple[str, ...] = ("train", "val", "test")
) -> list[tuple[str, str, str]]:
    """``(subject_id, mri_path, pet_path)`` of the subjects in ``splits`` (model-grid images)."""
    rows = split[split["split"].isin(splits)]
    return list(zip(rows["subject_id"], rows["model_mri"], rows["model_pet"], strict=True))


def evaluation_subjects(split: pd.DataFrame) -> pd.DataFrame:
    """The subject table of the evaluation stage: subject_id, split, group and image paths."""
    rows = split[split["split"].isin(("train", "val", "test"))]
    return pd.DataFrame(
        {
            "subject_id": rows["subject_id"].to_numpy(),
            "split": rows["split"].to_numpy(),
            "group": rows["group"].to_numpy(),
            "mri_path": rows["model_mri"].to_numpy(),
            "pet_path": rows["model_pet"].to_numpy(),
            "mask_path": rows["model_mask"].to_numpy(),
        }
    )


def check_network_config(network: str, model_config: dict, train_config: dict) -> None:
    """Check one network's config before any job runs (ValueError naming the config keys).

    ``model_config`` (``models.<network>``) must hold only constructor arguments of the
    network's class; ``train_config`` (``train:`` with ``train.overrides.<network>``) must
    resolve with the network's recipe (:func:`fusion3d.learned.training.resolve_train_config`).
    """
    import inspect

    from fusion3d.learned.recipes import recipe_for
    from fusion3d.learned.training import resolve_train_config

    recipe = recipe_for(network)
    params = inspect.signature(recipe.model_class.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(model_config) - set(params) - {"self"})
        if unknown:
            raise ValueError(
                f"config key models.{network}: unknown key(s) {unknown} for "
                f"{recipe.model_class.__name__}; allowed: {sorted(set(params) - {'self'})}"
            )
    try:
        resolve_train_config(train_config, model_config, recipe)
    except ValueError as exc:
        raise ValueError(
            f"config keys train / train.overrides.{network} ({recipe.method} recipe): {exc}"
        ) from exc


# ------------------------------------------------------------------ config checks, pre-flight
def _key_path(parts: Iterable) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _found(value) -> str:
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _problem_line(error) -> str:
    """One line for one jsonschema error: the key, what was expected, what was found."""
    where = _key_path(error.absolute_path)
    kind, expected, schema = error.validator, error.validator_value, error.schema
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        prefix = "" if not error.absolute_path else f"{where}."
        return (
            f"config key {', '.join(prefix + k for k in extra)}: unknown key; "
            f"expected one of {', '.join(allowed)}"
        )
    if kind == "enum":
        return (
            f"config key {where}: expected one of {', '.join(map(str, expected))}, "
            f"found {_found(error.instance)}"
        )
    if kind == "type":
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"config key {where}: expected {expected}, found {_found(error.instance)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        found = _found(error.instance)
        return f"config key {where}: expected {sign[kind]} {expected}, found {found}"
    if kind == "required":
        return f"config key {where}: {error.message}"
    return f"config key {where}: {error.message.splitlines()[0][:160]}"


def config_problems(config: dict, schema_path: str | os.PathLike) -> list[str]:
    """Every problem of ``config`` against the study's schema, one line each.

    Parameters
    ----------
    config : dict
        The study's config (as loaded, before the defaults are filled in).
    schema_path : path
        ``workflow/schemas/config.schema.yaml``.

    Returns
    -------
    list of str
        ``config key <key>: expected ..., found ...`` lines in the config's key order (empty
        when the config is valid); never the schema itself.
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines: list[str] = []
    for error in errors:
        # a oneOf/anyOf reports through its sub-errors when it has them
        for leaf in error.context or [error]:
            line = _problem_line(leaf)
            if line not in lines:
                lines.append(line)
    return lines


def validate_config(config: dict, schema_path: str | os.PathLike) -> dict:
    """Validate ``config`` against the schema and fill in its defaults (in place).

    Raises
    ------
    ValueError
        Listing every problem on its own line (:func:`config_problems`), not the schema.
    """
    from snakemake.utils import validate

    problems = config_problems(config, schema_path)
    if problems:
        raise ValueError(
            f"the study's config does not match {schema_path} "
            f"({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n  "
            + "\n  ".join(problems)
        )
    validate(config, str(schema_path), set_default=True)
    return config


#: The CPU demo's config, which the Snakefile loads before any ``--configfile``.
DEMO_CONFIG = "config/config.yaml"

#: Keys that set the size and cost of the networks and their training: a real cohort
#: (``cohort.source: adni``) must not take them from the CPU demo (config/config.yaml) unseen.
DEMO_MODEL_KEYS = (
    "preprocess.grid",
    "preprocess.mni_resolution_mm",
    "models",
    "train",
    "split.fractions",
    "resources",
)


def _leaves(node, prefix: str, stop: set[str]) -> Iterator[tuple[str, object]]:
    """Dotted ``(key, value)`` leaves of a nested dict; keys in ``stop`` count as one leaf."""
    if not isinstance(node, dict) or prefix in stop or not node:
        yield prefix, node
        return
    for key, value in node.items():
        yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key), stop)


def _has_key(config: dict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def demo_keys(config: dict, user_config: dict, demo_config: dict) -> dict[str, object]:
    """The model and training keys a study took from the demo config, not from its user.

    Parameters
    ----------
    config : dict
        The study's config (validated).
    user_config : dict
        What the user gave: the ``--configfile`` files and ``--config`` values merged
        (Snakemake's ``workflow.config_settings.overwrite_config``).
    demo_config : dict
        ``config/config.yaml`` (the CPU demo), which the Snakefile always loads first.

    Returns
    -------
    dict
        Dotted key -> value, in :data:`DEMO_MODEL_KEYS` order, for every key under those
        that the demo set and the user did not; ``models.<net>`` and
        ``train.overrides.<net>`` count as one key each when the user gave no entry
        (else each key of the entry they left out), and only for networks of ``methods``; a ``train.<key>`` that every network overrides (e.g. the demo's
        ``train.epochs`` under the paper config's ``train.overrides.<net>.epochs``) is not
        named. Empty when the user gave no config file (the demo itself).
    """
    if not user_config:
        return {}
    methods = set(config.get("methods", []))
    nets = {f"models.{n}" for n in methods} | {f"train.overrides.{n}" for n in methods}
    found: dict[str, object] = {}
    for root in DEMO_MODEL_KEYS:
        if not _has_key(demo_config, root):
            continue
        node = demo_config
        for part in root.split("."):
            node = node[part]
        # a network the user left out counts as one key; of one they gave, each key they
        # left out (nested sections merge: the rest of its entry is still the demo's)
        whole = {k for k in nets if not _has_key(user_config, k)}
        for key, value in _leaves(node, root, whole):
            net = ".".join(key.split(".")[: 3 if key.startswith("train.overrides.") else 2])
            if key.startswith(("models.", "train.overrides.")) and net not in nets:
                continue
            if not _has_key(user_config, key) and not _overridden(config, key, methods):
                found[key] = value
    return found


def _overridden(config: dict, key: str, methods: set[str]) -> bool:
    """A ``train.<k>`` that every network of ``methods`` sets in ``train.overrides.<net>``
    (so the demo's value reaches none of them)."""
    part = key.removeprefix("train.")
    if part == key or "." in part or part in ("seeds", "overrides"):
        return False
    networks = [m for m in methods if m in NETWORK_METHODS]
    overrides = config.get("train", {}).get("overrides", {})
    return bool(networks) and all(part in overrides.get(n, {}) for n in networks)


def loaded_demo_config(configfiles: Iterable, demo_path: str = DEMO_CONFIG) -> dict:
    """The demo config when the Snakefile's ``configfile:`` loaded it, else ``{}``.

    ``configfiles`` is Snakemake's ``workflow.configfiles``; the directive loads
    ``config/config.yaml`` only where it exists (relative to the working directory), so a
    run in another ``--directory`` takes its ``--configfile`` alone.
    """
    import yaml

    if demo_path not in [str(p) for p in configfiles] or not Path(demo_path).is_file():
        return {}
    return yaml.safe_load(Path(demo_path).read_text(encoding="utf-8")) or {}


def demo_warning(keys: dict[str, object], demo_path: str = DEMO_CONFIG) -> str:
    """The plain warning of a real-cohort study that runs with the demo's values (or '')."""
    if not keys:
        return ""
    listed = "".join(
        f"\n  {k}: the demo's network" if k.startswith("models.") else f"\n  {k} = {v}"
        for k, v in keys.items()
    )
    return (
        f"WARNING: cohort.source is adni, but {len(keys)} model and training key(s) come from "
        f"the CPU demo {demo_path}, not from your config:{listed}\n"
        "Set them in your config (config/adni.yaml holds the paper's values; "
        "docs/configuration.md)."
    )


def network_parameters(network: str, model_config: dict) -> int:
    """Number of parameters of a network built from its config (on the CPU, a few seconds at
    the paper's size)."""
    import torch

    from fusion3d.learned.recipes import recipe_for

    with torch.no_grad():
        model = recipe_for(network).build_model(dict(model_config))
    return int(sum(p.numel() for p in model.parameters()))


def _cohort_line(config: dict) -> str:
    cohort = config["cohort"]
    if cohort["source"] == "synthetic":
        syn = cohort["synthetic"]
        return f"synthetic, {syn['n_subjects']} subjects (seed {syn['seed']})"
    if cohort["source"] == "bids":
        return f"bids, dataset {cohort.get('bids_dir')}"
    line = f"adni, download {cohort.get('download_dir')}"
    ids = cohort.get("image_ids")
    if ids and Path(ids).is_file():
        from fusion3d.ingest.cohort import read_cohort

        line += f", cohort list {ids} ({len(read_cohort(ids)):,} image IDs)"
    return line + (", every pair found" if not ids else "")


def _network_lines(config: dict, train_configs: dict, parameters: dict, demo: dict) -> list[str]:
    from fusion3d.learned.recipes import recipe_for
    from fusion3d.learned.training import resolve_train_config

    lines = []
    for net, train_config in train_configs.items():
        model_config = config["models"].get(net, {})
        cfg = resolve_train_config(train_config, model_config, recipe_for(net))
        count = parameters.get(net)
        size = (
            "size ?"
            if count is None
            else f"{count / 1e6:.2f} M parameters"
            if count >= 100_000
            else f"{count:,} parameters"
        )
        origin = "  [models from config/config.yaml, the demo]" if f"models.{net}" in demo else ""
        lines.append(
            f"  {net}: {size}, {cfg['epochs']} epochs, lr {cfg['lr']:g}, "
            f"batch {cfg['batch_size']}{origin}"
        )
    return lines


def study_summary(
    config: dict,
    train_configs: dict[str, dict],
    parameters: dict[str, int] | None = None,
    demo: dict[str, object] | None = None,
) -> str:
    """What a study will run, for the console and ``<results>/study.txt``.

    Parameters
    ----------
    config : dict
        The validated config.
    train_configs : dict
        Network -> its train config (``network_train_config`` of common.smk, first seed).
    parameters : dict, optional
        Network -> parameter count (:func:`network_parameters`).
    demo : dict, optional
        :func:`demo_keys` of the study; named under each network and in a warning.

    Returns
    -------
    str
        Lines: cohort, preprocessing, split, device, networks (size, epochs, lr, batch),
        seeds, methods, protocols, and the demo warning when there is one.
    """
    pre, res, demo = config["preprocess"], config["resources"], demo or {}
    fractions = config["split"]["fractions"]
    device = (
        f"CUDA GPU ({res['gpus']} for training)" if res["gpu"] else "CPU (resources.gpu: false)"
    )
    lines = [
        "fusion3d study",
        f"results: {config['results']}",
        f"cohort: {_cohort_line(config)}",
        f"preprocessing: grid {pre['grid']}^3, MNI {pre['mni_resolution_mm']} mm, "
        f"brain extraction {pre['brain_extraction']}, T1 -> MNI {pre['t1_to_mni']}, "
        f"SUVR reference {pre['suvr_region']}",
        "split: "
        + " / ".join(f"{k} {fractions.get(k, 0):g}" for k in ("train", "val", "test"))
        + f" (seed {config['split']['seed']})",
        f"device: {device}",
        f"networks ({len(train_configs)}):",
        *_network_lines(config, train_configs, parameters or {}, demo),
        "seeds: " + ", ".join(str(s) for s in config["train"]["seeds"]),
        "methods: " + ", ".join(config["methods"]),
        "protocols: "
        + ", ".join(config["evaluate"]["protocols"])
        + f" (reference {config['evaluate']['reference']})",
    ]
    probe = config.get("probe", {})
    if probe.get("enabled", True):
        lines.append(
            f"probe: {', '.join(probe.get('tasks', ['AD_vs_CN']))}, "
            f"{probe.get('repeats', 10)} x {probe.get('folds', 5)}-fold on splits "
            f"{', '.join(probe.get('splits', ['train', 'val', 'test']))} "
            f"(at least {probe.get('min_per_class', 5)} a class)"
        )
    if config["cohort"]["source"] == "adni" and demo:
        lines.append(demo_warning(demo))
    return "\n".join(lines) + "\n"


def write_study_summary(text: str, path: str | os.PathLike) -> Path:
    """Write the pre-flight summary (``<results>/study.txt``) and print it."""
    from fusion3d.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    print(text, end="", flush=True)
    return path


# ------------------------------------------------------------------ cross-key checks, at start
def _size_divisor(network: str, model_config: dict) -> tuple[int, int | None]:
    """``(size_divisor, patch_size)`` of a network's config: every side of its input must be
    divisible by the divisor. Read from the class, from the DC2Fusion formula
    (``patch_size * 2**(len(depths) - 1) * window_size``) or, failing both, from the network
    built on the CPU."""
    import inspect

    from fusion3d.learned.recipes import recipe_for

    cls = recipe_for(network).model_class
    params = inspect.signature(cls.__init__).parameters
    args = {k: v.default for k, v in params.items() if v.default is not inspect.Parameter.empty}
    args.update(model_config)
    patch = int(args["patch_size"]) if "patch_size" in args else None
    if isinstance(getattr(cls, "size_divisor", None), int):
        return int(cls.size_divisor), patch
    if {"patch_size", "depths", "window_size"} <= set(args):
        return int(args["patch_size"]) * 2 ** (len(args["depths"]) - 1) * int(
            args["window_size"]
        ), patch
    model = cls(**model_config)
    return int(getattr(model, "size_divisor", 1) or 1), patch


def _grid_conflicts(config: dict, networks: list[str]) -> list[str]:
    grid = int(config["preprocess"]["grid"])
    out = []
    for network in networks:
        model_config = config["models"].get(network, {})
        try:
            divisor, patch = _size_divisor(network, model_config)
        except (TypeError, ValueError) as exc:
            out.append(f"config key models.{network}: the network cannot be built: {exc}")
            continue
        if patch is not None and patch > grid:
            out.append(
                f"config keys preprocess.grid ({grid}) and models.{network}.patch_size ({patch}): "
                f"the patch is larger than the grid; rule: patch_size <= grid"
            )
        elif grid % divisor:
            low, high = grid // divisor * divisor, (grid // divisor + 1) * divisor
            nearest = f"{low} or {high}" if low else str(high)
            out.append(
                f"config keys preprocess.grid ({grid}) and models.{network}: {network} cannot tile "
                f"a grid of {grid}; rule: every grid side divisible by {divisor} (for DC2Fusion "
                f"patch_size x 2^(stages - 1) x window_size); nearest valid grid {nearest}"
            )
    return out


def _split_conflicts(config: dict, networks: list[str], n_subjects: int | None) -> list[str]:
    from fusion3d.split import SPLITS, _allocate

    fractions = {k: float(config["split"]["fractions"].get(k, 0.0)) for k in SPLITS}
    needed = ["train", "val", "test"] if networks else ["test"]
    why = {
        "train": "the networks train on it",
        "val": "the networks select their model on it",
        "test": "Table 1 and the tests are computed on it",
    }
    counts = _allocate(n_subjects, fractions) if n_subjects is not None else None
    out = []
    for name in needed:
        if fractions[name] <= 0 or (counts is not None and counts[name] == 0):
            size = f" of {n_subjects} subjects" if n_subjects is not None else ""
            keys = "split.fractions" + (
                " and cohort.synthetic.n_subjects" if n_subjects is not None else ""
            )
            out.append(
                f"config keys {keys}: fraction {name} {fractions[name]:g} leaves the {name} split "
                f"empty{size} ({why[name]}); rule: every split a study needs holds a subject"
            )
    return out


def config_conflicts(config: dict) -> list[str]:
    """Every pair of config values that cannot work together, one line each naming the keys
    and the rule (empty when the config is consistent). Checked before any job runs, since
    the first job to notice may come hours later (after preprocessing every subject).

    - ``preprocess.grid`` and each network's ``models.<network>``: the patch fits in the grid
      and the network tiles it (its ``size_divisor`` divides the grid);
    - ``resources.gpus`` > 1 needs ``resources.gpu: true``;
    - ``split.fractions`` (with ``cohort.synthetic.n_subjects`` for the synthetic cohort):
      the test split, and with networks the train and val splits, are not empty;
    - method names in lists and maps: ``baselines.<method>`` a classic method,
      ``models.<method>`` and ``train.overrides.<method>`` networks of ``methods``,
      ``evaluate.reference`` one of ``methods``.
    """
    methods = list(config["methods"])
    networks = [m for m in methods if m in NETWORK_METHODS]
    out = []
    unknown = [m for m in config.get("baselines", {}) if m not in CLASSIC_METHODS]
    if unknown:
        out.append(
            f"config key baselines: unknown method(s) {unknown}; rule: baselines holds "
            f"parameters of classic methods only ({', '.join(CLASSIC_METHODS)})"
        )
    for key in ("models", "train.overrides"):
        section = config["models"] if key == "models" else config["train"].get("overrides", {})
        extra = [m for m in section if m not in NETWORK_METHODS]
        if extra:
            out.append(
                f"config key {key}: unknown network(s) {extra}; rule: one of "
                f"{', '.join(NETWORK_METHODS)}"
            )
    if config["evaluate"]["reference"] not in methods:
        out.append(
            f"config keys evaluate.reference ({config['evaluate']['reference']!r}) and methods: "
            "rule: the reference is one of methods"
        )
    if int(config["resources"]["gpus"]) > 1 and not config["resources"]["gpu"]:
        out.append(
            f"config keys resources.gpus ({config['resources']['gpus']}) and resources.gpu "
            "(false): rule: more than one GPU needs resources.gpu: true"
        )
    synthetic = config["cohort"]["source"] == "synthetic"
    n_subjects = config["cohort"].get("synthetic", {}).get("n_subjects") if synthetic else None
    out += _split_conflicts(config, networks, n_subjects)
    out += _grid_conflicts(config, [n for n in networks if n in config["models"]])
    return out


def check_config_consistency(config: dict) -> None:
    """Raise ValueError listing :func:`config_conflicts` (one line each) when there are any."""
    problems = config_conflicts(config)
    if problems:
        raise ValueError(
            "the config's values cannot work together:\n" + "\n".join(f"- {p}" for p in problems)
        )
