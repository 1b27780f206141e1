"""Structure of the library: no function over 80 lines, one list of methods and of outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fusion3d import baselines, methods
from fusion3d.evaluation import long_table, tables
from fusion3d.learned.recipes import recipe_for
from fusion3d.metrics import PAPER_NAMES, SUITE_NAMES, VOLUME_NAMES, names
from fusion3d.preprocess import outputs
from fusion3d.report.paper import PAPER_TABLE1
from fusion3d.subjects import match_inputs

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
    assert baselines.METHODS == methods.CLASSIC_METHODS
    assert {"dcfb2d", "dcfb3d", "matr"} <= set(methods.NETWORK_METHODS)
    for name in methods.NETWORK_METHODS:  # every network trains with a recipe of its own kind
        recipe = recipe_for(name)
        assert recipe.architecture == methods.BY_NAME[name].architecture
        assert name.startswith("dcfb") or recipe.model_class.spatial_dims == 2
    assert {m.kind for m in methods.METHODS} == {"classic", "network"}
    assert methods.PAPER_METHODS == tuple(PAPER_TABLE1)  # the paper's rows, in its order
    for m in methods.METHODS:
        assert long_table.method_name(m.name) == m.label and m.dims in ("2D", "3D")
    # the paper's order: its 2D baselines, DC2Fusion, then our 2D twin and the classic fusions
    assert long_table.method_order(["pca", "dcfb3d", "dcfb2d", "average"]) == [
        "dcfb3d",
        "dcfb2d",
        "average",
        "pca",
    ]


def test_one_list_of_metric_names():
    assert (PAPER_NAMES, VOLUME_NAMES, SUITE_NAMES) == tuple(names.PROTOCOL_NAMES.values())
    assert set(tables.PAPER_METRICS) == set(PAPER_NAMES)
    every = set(PAPER_NAMES) | set(VOLUME_NAMES) | set(SUITE_NAMES)
    assert every == set(names.METRIC_LABELS)


def test_preprocessing_outputs_are_named_in_one_place(tmp_path):
    paths = outputs.output_paths(tmp_path, "sub-A_ses-M000")
    assert set(paths) == set(outputs.SUFFIXES)
    assert paths["t1_model"] == tmp_path / "sub-A_ses-M000_desc-model_T1w.nii.gz"
    assert set(outputs.MODEL_KEYS) <= set(outputs.SUFFIXES) and outputs.WARP_KEY in outputs.SUFFIXES


def test_one_helper_matches_declared_inputs_to_subjects():
    files = ["d/sub-A_ses-M000/sub-A_ses-M000_qc.json", "d/sub-B_ses-M000/sub-B_ses-M000_qc.json"]
    expected = {"sub-A_ses-M000": files[0], "sub-B_ses-M000": files[1]}
    assert match_inputs(files, ["sub-A_ses-M000", "sub-B_ses-M000"], "qc_json") == expected
    assert match_inputs(files[::-1], ["sub-A_ses-M000", "sub-B_ses-M000"], "qc_json") == expected
    with pytest.raises(ValueError, match="sub-B_ses-M000_qc.json: not among"):
        match_inputs(files[:1], ["sub-A_ses-M000", "sub-B_ses-M000"], "qc_json")


# --- the package's joints ------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    """``fusion3d.<...>`` module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], bool]]:
    """``(module, names, at_top)`` of every ``fusion3d`` import in a file (``at_top``: at module
    level, where an import circle bites)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fusion3d"):
            names = [a.name for a in node.names]
            sub = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules]
            found.append(
                (
                    node.module,
                    [n for n in names if f"{node.module}.{n}" not in sub],
                    id(node) in top,
                )
            )
            found += [(m, [], id(node) in top) for m in sub]
        elif isinstance(node, ast.Import):
            found += [
                (a.name, [], id(node) in top) for a in node.names if a.name.startswith("fusion3d")
            ]
    return found


def test_no_private_name_is_imported_across_modules():
    modules = _modules()
    offenders = [
        f"{path.relative_to(PACKAGE)}: {module}.{name}"
        for path in modules.values()
        for module, names, _ in _imports(path, modules)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert offenders == []


def test_no_import_circle():
    modules = _modules()
    graph = {
        name: {m for m, _, _ in _imports(path, modules) if m in modules and m != name}
        for name, path in modules.items()
    }
    # a package's __init__ importing its own submodules is how a package exposes them
    for name in graph:
        graph[name] = {
            m
            for m in graph[name]
            if not (m.startswith(name + ".") and modules[name].name == "__init__.py")
        }
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_sys_path_insert_in_tests():
    tests = Path(__file__).resolve().parents[1]
    offenders = [
        str(p.relative_to(tests))
        for p in sorted(tests.rglob("*.py"))
        if "sys.path.insert" in p.read_text(encoding="utf-8") and p != Path(__file__).resolve()
    ]
    assert offenders == []
