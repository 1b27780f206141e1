"""The pre-flight summary: what a study will run, printed and written to
``<results>/study.txt`` before its first job (:func:`study_summary`)."""

from __future__ import annotations

import os
from pathlib import Path

#: The size column of a network whose parameters the driver cannot count (no torch).
COUNTED_BY_TRAINING = "parameters in the train job's log (no torch in the driver)"


def network_parameters(network: str, model_config: dict) -> int:
    """Number of parameters of a network built from its config (on the CPU, a few seconds at
    the paper's size)."""
    import torch

    from fusion3d.learned.recipes import recipe_for

    with torch.no_grad():
        model = recipe_for(network).build_model(dict(model_config))
    return int(sum(p.numel() for p in model.parameters()))


def parameter_counts(config: dict, networks: list[str]) -> dict[str, int]:
    """Network -> parameter count (:func:`network_parameters`) where torch is importable in the
    driver; empty where it is not (a Snakemake-only driver, ``envs/snakemake.yaml``): the
    summary then says that the train job counts them (:data:`COUNTED_BY_TRAINING`)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return {}
    return {n: network_parameters(n, config["models"][n]) for n in networks}


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


def _network_lines(config: dict, train_configs: dict, parameters: dict) -> list[str]:
    from fusion3d.learned.settings import resolve_train_config, settings_for

    lines = []
    for net, train_config in train_configs.items():
        model_config = config["models"].get(net, {})
        cfg = resolve_train_config(train_config, model_config, settings_for(net))
        count = parameters.get(net)
        size = (
            COUNTED_BY_TRAINING
            if count is None
            else f"{count / 1e6:.2f} M parameters"
            if count >= 100_000
            else f"{count:,} parameters"
        )
        epochs = f"{cfg['epochs']} epochs"
        if cfg["patience"] is not None:  # off: the line as before early stopping
            epochs = f"up to {epochs} (patience {cfg['patience']} validation checks)"
        lines.append(f"  {net}: {size}, {epochs}, lr {cfg['lr']:g}, batch {cfg['batch_size']}")
    return lines


def study_summary(
    config: dict,
    train_configs: dict[str, dict],
    parameters: dict[str, int] | None = None,
) -> str:
    """What a study will run, for the console and ``<results>/study.txt``.

    Parameters
    ----------
    config : dict
        The validated config.
    train_configs : dict
        Network -> its train config (:func:`fusion3d.config.network_train_config`, first
        seed).
    parameters : dict, optional
        Network -> parameter count (:func:`parameter_counts`); a network without one is
        listed as :data:`COUNTED_BY_TRAINING`.

    Returns
    -------
    str
        Lines: cohort, preprocessing, split, device, networks (size, epochs or ``up to``
        epochs with the patience of early stopping, lr, batch),
        seeds, methods, protocols and the probe.
    """
    pre, res = config["preprocess"], config["resources"]
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
        *_network_lines(config, train_configs, parameters or {}),
        "seeds: " + ", ".join(str(s) for s in config["train"]["seeds"]),
        "methods: " + ", ".join(config["methods"]),
        "protocols: "
        + ", ".join(config["evaluate"]["protocols"])
        + f" (reference {config['evaluate']['reference']})",
    ]
    probe = config["probe"]
    if probe["enabled"]:
        lines.append(
            f"probe: {', '.join(probe['tasks'])}, "
            f"{probe['repeats']} x {probe['folds']}-fold on splits "
            f"{', '.join(probe['splits'])} "
            f"(at least {probe['min_per_class']} a class)"
            + ("; the T1 also by regional GM volumes (Atropos)" if probe["t1_volumes"] else "")
        )
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
