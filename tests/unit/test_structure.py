"""Structure of the library: no function over 80 lines, one list of methods and of outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fusion3d import baselines, evaluation, methods, workflow
from fusion3d.learned.recipes import recipe_for
from fusion3d.metrics import PAPER_NAMES, SUITE_NAMES, VOLUME_NAMES, names
from fusion3d.preprocess import outputs

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "fusion3d"
MAX_LINES = 80


def long_functions(root: Path, max_lines: int) -> list[str]:
    """``path:line name (n lines)`` of every function or method longer than ``max_lines``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > max_lines:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_over_80_lines_in_the_library():
    assert long_functions(PACKAGE, MAX_LINES) == []


def test_long_function_finder_finds_one(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path, MAX_LINES) == [f"m.py:5 long ({MAX_LINES + 1} lines)"]


def test_one_list_of_methods():
    assert baselines.METHODS == methods.CLASSIC_METHODS == workflow.CLASSIC_METHODS
    assert {"dcfb2d", "dcfb3d", "matr"} <= set(workflow.NETWORK_METHODS)
    for name in workflow.NETWORK_METHODS:  # every network trains with a recipe of its own kind
        recipe = recipe_for(name)
        assert recipe.architecture == methods.BY_NAME[name].architecture
        assert name.startswith("dcfb") or recipe.model_class.spatial_dims == 2
    assert {m.kind for m in methods.METHODS} == {"classic", "network"}
    for m in methods.METHODS:
        assert evaluation.method_name(m.name) == m.label and m.dims in ("2D", "3D")
    # the paper's order: its 2D baselines, DC2Fusion, then our 2D twin and the classic fusions
    assert evaluation.method_order(["pca", "dcfb3d", "dcfb2d", "average"]) == [
        "dcfb3d",
        "dcfb2d",
        "average",
        "pca",
    ]


def test_one_list_of_metric_names():
    assert (PAPER_NAMES, VOLUME_NAMES, SUITE_NAMES) == tuple(names.PROTOCOL_NAMES.values())
    assert set(evaluation.PAPER_METRICS) == set(PAPER_NAMES)
    every = set(PAPER_NAMES) | set(VOLUME_NAMES) | set(SUITE_NAMES)
    assert every == set(names.METRIC_LABELS)


def test_preprocessing_outputs_are_named_in_one_place(tmp_path):
    paths = outputs.output_paths(tmp_path, "sub-A_ses-M000")
    assert set(paths) == set(outputs.SUFFIXES)
    assert paths["t1_model"] == tmp_path / "sub-A_ses-M000_desc-model_T1w.nii.gz"
    assert set(outputs.MODEL_KEYS) <= set(outputs.SUFFIXES) and outputs.WARP_KEY in outputs.SUFFIXES


def test_per_subject_matches_files_to_subjects():
    files = ["d/sub-A_ses-M000/sub-A_ses-M000_qc.json", "d/sub-B_ses-M000/sub-B_ses-M000_qc.json"]
    assert workflow.per_subject(files, ["sub-A_ses-M000", "sub-B_ses-M000"]) == {
        "sub-A_ses-M000": files[0],
        "sub-B_ses-M000": files[1],
    }

    with pytest.raises(ValueError, match="not a file of subject sub-A_ses-M000"):
        workflow.per_subject(files[::-1], ["sub-A_ses-M000", "sub-B_ses-M000"])
    with pytest.raises(ValueError, match="1 files for 2 subjects"):
        workflow.per_subject(files[:1], ["sub-A_ses-M000", "sub-B_ses-M000"])
