"""One place where a study's config is resolved: :func:`resolve`.

The Snakefile loads the config (``config/config.yaml``, the synthetic demo, only when no
``--configfile`` is given, so that a study's config stands on its own), and
``workflow/rules/common.smk`` calls :func:`resolve` once. It

1. validates the config against ``workflow/schemas/config.schema.yaml`` and lists every
   problem on its own line (:func:`config_problems`), never the schema;
2. fills in every default from the schema alone;
3. gives every network of ``methods`` its ``models.<network>`` entry (a network without one
   takes its published sizes; DC2Fusion's ``spatial_dims`` comes from the method,
   ``dcfb3d`` or ``dcfb2d``);
4. runs every cross-key check (:func:`config_conflicts`), including the grid check of every
   network of ``methods``, and resolves each network's training config with its recipe
   (:func:`network_train_config`, :func:`check_network_config`),

so that a config that cannot work stops the run before any job starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from fusion3d.methods import CLASSIC_METHODS, NETWORK_METHODS

#: ``spatial_dims`` of the DC2Fusion methods (one architecture, two methods).
DCFB_SPATIAL_DIMS = {"dcfb3d": 3, "dcfb2d": 2}


def resolve(config: dict, schema_path: str | os.PathLike) -> dict:
    """Validate ``config``, fill in its defaults and networks, and check it (in place).

    Parameters
    ----------
    config : dict
        The study's config as loaded.
    schema_path : path
        ``workflow/schemas/config.schema.yaml``.

    Returns
    -------
    dict
        ``config``, with every schema default and a ``models.<network>`` entry for every
        network of ``methods``.

    Raises
    ------
    ValueError
        Listing every schema problem, or every pair of values that cannot work together,
        one line each naming the keys.
    """
    validate_config(config, schema_path)
    fill_models(config)
    check_config_consistency(config)
    seed = int(config["train"]["seeds"][0])
    for network in networks_of(config):
        check_network_config(
            network, config["models"][network], network_train_config(config, network, seed)
        )
    return config


def networks_of(config: dict) -> list[str]:
    """The networks of ``methods``, in its order."""
    return [m for m in config["methods"] if m in NETWORK_METHODS]


def classic_of(config: dict) -> list[str]:
    """The classic (deterministic) methods of ``methods``, in its order."""
    return [m for m in config["methods"] if m in CLASSIC_METHODS]


def fill_models(config: dict) -> dict:
    """Give every network of ``methods`` a ``models.<network>`` entry (in place).

    A network without an entry takes its published sizes (its class's defaults); the
    DC2Fusion methods get ``spatial_dims`` from the method when the entry lacks it.
    """
    models = config.setdefault("models", {})
    for network in networks_of(config):
        entry = models.setdefault(network, {})
        if network in DCFB_SPATIAL_DIMS:
            entry.setdefault("spatial_dims", DCFB_SPATIAL_DIMS[network])
    return config


def network_train_config(config: dict, network: str, seed: int | None) -> dict:
    """The train config of one network and seed: the keys of ``train`` (less ``seeds`` and
    ``overrides``), then ``train.overrides.<network>``, then the seed. Keys left unset take
    the network's published settings (:mod:`fusion3d.learned.recipes`)."""
    common = {k: v for k, v in config["train"].items() if k not in ("seeds", "overrides")}
    return {
        **common,
        **config["train"].get("overrides", {}).get(network, {}),
        "seed": int(seed if seed is not None else config["train"]["seeds"][0]),
    }


# ------------------------------------------------------------------ the schema
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


# ------------------------------------------------------------------ one network's config
def check_network_config(network: str, model_config: dict, train_config: dict) -> None:
    """Check one network's config before any job runs (ValueError naming the config keys).

    ``model_config`` (``models.<network>``) must hold only constructor arguments of the
    network's class (:mod:`fusion3d.learned.shapes`); ``train_config`` (``train:`` with
    ``train.overrides.<network>``) must resolve with the network's published settings
    (:func:`fusion3d.learned.settings.resolve_train_config`). Neither imports torch.
    """
    from fusion3d.learned.settings import resolve_train_config, settings_for
    from fusion3d.learned.shapes import shape_for

    settings, shape = settings_for(network), shape_for(network)
    unknown = sorted(set(model_config) - set(shape.keys))
    if unknown:
        raise ValueError(
            f"config key models.{network}: unknown key(s) {unknown} for "
            f"{shape.class_name}; allowed: {sorted(shape.keys)}"
        )
    try:
        resolve_train_config(train_config, model_config, settings)
    except ValueError as exc:
        raise ValueError(
            f"config keys train / train.overrides.{network} ({settings.architecture} recipe): {exc}"
        ) from exc


# ------------------------------------------------------------------ cross-key checks
def _size_divisor(network: str, model_config: dict) -> tuple[int, int | None]:
    """``(size_divisor, patch_size)`` of a network's config: every side of its input must be
    divisible by the divisor (:meth:`fusion3d.learned.shapes.NetworkShape.size_divisor`:
    for DC2Fusion ``patch_size * 2**(len(depths) - 1) * window_size``)."""
    from fusion3d.learned.shapes import shape_for

    shape = shape_for(network)
    args = shape.resolve(model_config)
    patch = int(args["patch_size"]) if "patch_size" in args else None
    return shape.size_divisor(model_config), patch


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
    from fusion3d.split import SPLITS, allocate

    fractions = {k: float(config["split"]["fractions"].get(k, 0.0)) for k in SPLITS}
    needed = ["train", "val", "test"] if networks else ["test"]
    why = {
        "train": "the networks train on it",
        "val": "the networks select their model on it",
        "test": "Table 1 and the tests are computed on it",
    }
    counts = allocate(n_subjects, fractions) if n_subjects is not None else None
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


def _name_conflicts(config: dict, networks: list[str]) -> list[str]:
    """Method names in maps and lists: each names a method of the right kind in ``methods``."""
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
    absent = [m for m in config["train"].get("overrides", {}) if m in NETWORK_METHODS]
    absent = [m for m in absent if m not in networks]
    if absent:
        out.append(
            f"config keys train.overrides and methods: {absent} not among the networks of "
            "methods; rule: train.overrides.<network> names a network the study trains"
        )
    for network, dims in DCFB_SPATIAL_DIMS.items():
        given = config["models"].get(network, {}).get("spatial_dims", dims)
        if network in networks and int(given) != dims:
            out.append(
                f"config key models.{network}.spatial_dims: {given}; rule: {network} is the "
                f"{dims}D network (spatial_dims: {dims})"
            )
    if config["evaluate"]["reference"] not in config["methods"]:
        out.append(
            f"config keys evaluate.reference ({config['evaluate']['reference']!r}) and methods: "
            "rule: the reference is one of methods"
        )
    return out


def config_conflicts(config: dict) -> list[str]:
    """Every pair of config values that cannot work together, one line each naming the keys
    and the rule (empty when the config is consistent). Checked before any job runs, since
    the first job to notice may come hours later (after preprocessing every subject).

    - ``preprocess.grid`` and every network of ``methods`` (its ``models.<network>`` entry,
      or its published sizes without one): the patch fits in the grid and the network tiles
      it (its ``size_divisor`` divides the grid);
    - ``resources.gpus`` > 1 needs ``resources.gpu: true``;
    - ``split.fractions`` add up to 1 and (with ``cohort.synthetic.n_subjects`` for the
      synthetic cohort) leave the test split, and with networks the train and val splits,
      not empty;
    - method names in lists and maps: ``baselines.<method>`` a classic method,
      ``models.<method>`` a network, ``train.overrides.<method>`` a network of ``methods``,
      ``models.dcfb3d``/``dcfb2d`` of their own dimension, ``evaluate.reference`` one of
      ``methods``.
    """
    networks = networks_of(config)
    out = _name_conflicts(config, networks)
    if int(config["resources"]["gpus"]) > 1 and not config["resources"]["gpu"]:
        out.append(
            f"config keys resources.gpus ({config['resources']['gpus']}) and resources.gpu "
            "(false): rule: more than one GPU needs resources.gpu: true"
        )
    fractions = config["split"]["fractions"]
    total = sum(float(fractions.get(k, 0.0)) for k in ("train", "val", "test"))
    if abs(total - 1.0) > 1e-6:
        out.append(f"config key split.fractions: train + val + test add up to {total:g}; rule: 1")
    synthetic = config["cohort"]["source"] == "synthetic"
    n_subjects = config["cohort"].get("synthetic", {}).get("n_subjects") if synthetic else None
    out += _split_conflicts(config, networks, n_subjects)
    out += _grid_conflicts(config, networks)
    return out


def check_config_consistency(config: dict) -> None:
    """Raise ValueError listing :func:`config_conflicts` (one line each) when there are any."""
    problems = config_conflicts(config)
    if problems:
        raise ValueError(
            "the config's values cannot work together:\n" + "\n".join(f"- {p}" for p in problems)
        )


def load_schema_defaults(schema_path: str | os.PathLike) -> dict:
    """A config holding only the schema's defaults (what a study gets for the keys it leaves
    out), e.g. for a library function called outside the workflow."""
    config: dict = {}
    validate_config(config, schema_path)
    return config
