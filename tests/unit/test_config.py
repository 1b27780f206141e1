"""The config schema: both shipped configs validate; typos and wrong types name the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[2]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "convergence.yaml", "adni.yaml"])
def test_shipped_configs_validate(name):
    config = load(name)
    validate(config, SCHEMA, set_default=True)
    assert config["figures"]["qc_per_page"] == 48  # defaults are filled in
    assert len(config["train"]["seeds"]) >= 2  # every network over several seeds
    # keys that differ between the networks' published recipes have no schema default
    assert not {"epochs", "lr", "batch_size", "augment"} & set(config["train"]) - set(
        load(name)["train"]
    )


def test_adni_config_is_the_paper_scale_study():
    config = load("adni.yaml")
    assert config["preprocess"]["grid"] == 128
    assert config["models"]["dcfb3d"]["depths"] == [2, 2, 6, 2]
    assert config["models"]["dcfb3d"]["num_heads"] == [3, 6, 12, 24]
    assert config["models"]["dcfb3d"]["embed_dim"] == 96
    assert config["train"]["overrides"]["dcfb3d"]["epochs"] == 500
    assert config["train"]["seeds"] == [3407, 1, 2] and config["resources"]["gpu"] is True
    assert config["cohort"]["image_ids"] == "config/cohorts/dc2fusion_image_ids.csv"


def test_convergence_config_trains_every_network_to_convergence():
    """Issue 34: early stopping on, at least 2 seeds, every network, realistic FDG, a test split
    of at least 10 and at least 5 AD and 5 CN for the probe."""
    from fusion3d.config import resolve
    from fusion3d.synthetic import default_group_counts

    config = resolve(load("convergence.yaml"), SCHEMA)
    assert config["train"]["patience"] >= 1 and len(config["train"]["seeds"]) >= 2
    assert {"swinfuse", "matr", "dilran", "dcfb3d", "dcfb2d"} <= set(config["methods"])
    assert config["cohort"]["synthetic"]["pet"]["realistic"] is True
    counts = default_group_counts(config["cohort"]["synthetic"]["n_subjects"])
    assert counts["AD"] >= 5 and counts["CN"] >= 5
    n = config["cohort"]["synthetic"]["n_subjects"]
    assert n * config["split"]["fractions"]["test"] >= 10
    assert config["results"] != "results"  # beside the default study, not over it
    # the PET it ran with (2026-12-07), pinned against later changes of the schema's defaults
    pet = config["cohort"]["synthetic"]["pet"]
    assert (pet["noise"], pet["recon_fwhm_mm"], pet["white_matter"]) == (0.12, 3.0, 0.15)
    assert config["cohort"]["synthetic"]["regional_uptake_variation"]["rms"] == 0


def test_the_default_study_renders_realistic_fdg_and_the_schema_agrees_with_the_generator():
    """Issue 33: the default cohort's PET is the realistic FDG, at the generator's defaults."""
    import dataclasses

    from fusion3d.config import resolve
    from fusion3d.synthetic.cohort import regional_variation_of
    from fusion3d.synthetic.disease import REGIONAL_UPTAKE_VARIATION
    from fusion3d.synthetic.pet import RealisticPet, realistic_pet_model

    synthetic = resolve(load("config.yaml"), SCHEMA)["cohort"]["synthetic"]
    pet = synthetic["pet"]
    assert pet["realistic"] is True
    assert realistic_pet_model(pet) == RealisticPet()
    assert {f.name for f in dataclasses.fields(RealisticPet)} == set(pet) - {"realistic"}
    # and the regional uptake variation at the disease model's (issue 33's probe target)
    regional = synthetic["regional_uptake_variation"]
    assert regional_variation_of(regional) == REGIONAL_UPTAKE_VARIATION
    assert regional_variation_of({}) == REGIONAL_UPTAKE_VARIATION
    assert regional_variation_of({"rms": 0}) is None and regional_variation_of(None) is None
    with pytest.raises(ValueError, match="regional_uptake_variation: unknown keys"):
        regional_variation_of({"sd": 0.1})
    with pytest.raises(ValueError, match="need 0 <= rms < 0.5"):
        regional_variation_of({"rms": -0.1})


def test_every_schema_property_has_a_description():
    schema = yaml.safe_load(Path(SCHEMA).read_text())

    def walk(node, where):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{where}.{key} has no description"
            walk(sub, f"{where}.{key}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{where}.*")

    walk(schema, "config")


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["preprocess"].update(gird=64), "gird"),
        (lambda c: c.update(reslts="x"), "reslts"),
        (lambda c: c["preprocess"].update(grid="64"), "grid"),
        (lambda c: c["train"].update(epochs=0), "epochs"),
        (lambda c: c["cohort"].update(source="ADNI"), "source"),
        (lambda c: c.update(methods=["dcfb3d", "swinfuze"]), "swinfuze"),
        (lambda c: c["train"].update(seeds=[1, 1]), "seeds"),
        (lambda c: c["models"]["dcfb3d"].update(spatial_dim=3), "spatial_dim"),
    ],
)
def test_typos_and_wrong_types_name_the_key(edit, key):
    config = copy.deepcopy(load("config.yaml"))
    edit(config)
    with pytest.raises(WorkflowError) as info:
        validate(config, SCHEMA, set_default=True)
    assert key in str(info.value)


def test_schema_errors_are_one_line_per_problem_not_the_schema():
    from fusion3d.config import config_problems, validate_config

    config = copy.deepcopy(load("config.yaml"))
    config["reslts"] = "x"
    config["preprocess"].update(grid="64", gird=3)
    config["cohort"]["source"] = "ADNI"
    config["train"]["epochs"] = 0
    lines = config_problems(config, SCHEMA)
    assert lines == [
        "config key reslts: unknown key; expected one of baselines, cohort, evaluate, figures, "
        "ingest, methods, models, preprocess, probe, resources, results, split, threads, train, viewer",
        "config key cohort.source: expected one of synthetic, adni, bids, found 'ADNI'",
        "config key preprocess.gird: unknown key; expected one of brain_extraction, grid, "
        "mni_resolution_mm, on_flag, options, qc, suvr_region, t1_to_mni",
        "config key preprocess.grid: expected integer, found '64'",
        "config key train.epochs: expected >= 1, found 0",
    ]
    with pytest.raises(ValueError) as info:
        validate_config(config, SCHEMA)
    message = str(info.value)
    assert message.count("\n") == len(lines) and "(5 problems)" in message
    assert "$schema" not in message and "description" not in message


def test_validate_config_fills_the_defaults():
    from fusion3d.config import validate_config

    config = validate_config(copy.deepcopy(load("config.yaml")), SCHEMA)
    assert config["train"]["num_workers"] == 0 and config["figures"]["qc_per_page"] == 48
