"""What every rule's script does around its one library call: send logging and stderr to
the rule's log and record the job's environment beside it (:func:`script_logging`), make the
rule's threads reach ITK, BLAS and torch (:func:`set_threads`), and size a training job's memory
(:func:`training_memory_mb`).

The environment record (:func:`environment_record`, ``<log>.versions.json`` beside the log,
:func:`versions_path`) says what the job itself ran on: its interpreter, the installed
distributions of the modules it imported, the package data it opened and the binaries it ran
from them (seen through audit hooks, PEP 578), and torch's CUDA and cuDNN when torch was
imported. ``provenance.json`` collects the records per rule (:mod:`fusion3d.provenance`).
Child interpreters a job starts (the preprocessing workers) run the same ``sys.executable`` and
are not recorded on their own. This module imports nothing outside the standard library, so the
record holds only what the job's own code imported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

#: Suffix of a job's environment record, beside its log (``<log stem>.versions.json``).
VERSIONS_SUFFIX = ".versions.json"

#: File suffixes that are code, not package data (an import, not a data file read).
CODE_SUFFIXES = frozenset({".py", ".pyi", ".pyc", ".pyd", ".so", ".pth", ".typed"})

#: What the audit hook saw while a job ran: files opened and programs started.
_SEEN: dict[str, object] = {"active": False, "opened": set(), "ran": []}


@contextlib.contextmanager
def script_logging(
    log_path: str | os.PathLike | None, rule: str | None = None
) -> Iterator[logging.Logger]:
    """Send logging and stderr of a rule's script to its log file for the duration of the block.

    A failure is logged with its traceback before it propagates, so the rule's log explains it.
    On leaving the block the job's environment record is written beside the log
    (:func:`versions_path`; ``status`` ``"ok"`` or ``"failed"``).

    Parameters
    ----------
    log_path : path or None
        The rule's log (``snakemake.log[0]``); ``None`` logs to stderr and records nothing.
    rule : str, optional
        The rule's name (``snakemake.rule``), written into the record; without it, the rule
        of the ``snakemake`` object of the running script, if there is one.
    """
    logger = logging.getLogger("fusion3d")
    if log_path is None:
        logging.basicConfig(level=logging.INFO)
        yield logger
        return
    watch_environment()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    handler = logging.StreamHandler(handle)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    old_stderr = sys.stderr
    sys.stderr = handle
    status = "failed"
    try:
        yield logger
        status = "ok"
    except BaseException:
        logger.exception("failed")
        raise
    finally:
        try:
            write_environment_record(versions_path(log_path), rule=rule, status=status)
        except Exception:  # noqa: BLE001 - a record that cannot be written must not hide the job's outcome
            logger.exception("environment record not written")
        sys.stderr = old_stderr
        root.removeHandler(handler)
        handle.close()


def versions_path(log_path: str | os.PathLike) -> Path:
    """The environment record of the job whose log is ``log_path``: ``<log stem>.versions.json``."""
    return Path(log_path).with_suffix(VERSIONS_SUFFIX)


def _audit(event: str, args: tuple) -> None:
    """Audit hook (PEP 578): note files opened and programs started while a job runs."""
    if not _SEEN["active"]:
        return
    if event == "open":
        path = os.fspath(args[0]) if isinstance(args[0], os.PathLike) else args[0]
        if isinstance(path, str):
            _SEEN["opened"].add(path)
    elif event == "subprocess.Popen":  # (executable, args, cwd, env): the child's PATH finds it
        env = args[3] if isinstance(args[3], dict) else {}
        _SEEN["ran"].append((args[0], args[1], env.get("PATH", env.get(b"PATH"))))


def watch_environment() -> None:
    """Start noting the package data and binaries this process uses (once per process)."""
    if not _SEEN.get("hooked"):
        sys.addaudithook(_audit)
        _SEEN["hooked"] = True
    _SEEN["opened"] = set()
    _SEEN["ran"] = []
    _SEEN["active"] = True


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def imported_distributions(owners: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Installed distribution -> version, of every top-level module imported in this process.

    The standard library and ``fusion3d`` itself (the workflow's ``src/``) are left out.
    """
    owners = metadata.packages_distributions() if owners is None else owners
    found: dict[str, str] = {}
    for name in list(sys.modules):
        if "." in name or name in sys.stdlib_module_names:
            continue
        for dist in owners.get(name, ()):
            version = _version(dist)
            if version is not None and _canonical(dist) != "fusion3d":
                found[dist] = version
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def _site_roots() -> list[Path]:
    roots = {Path(p).resolve() for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return sorted(roots, key=lambda p: -len(str(p)))


def package_data_used(owners: dict[str, list[str]]) -> dict[str, list[str]]:
    """Distribution -> the data files (not code) of it that this process opened while watched."""
    used: dict[str, set[str]] = {}
    roots = _site_roots()
    for opened in sorted(_SEEN["opened"]):
        path = Path(opened)
        if path.suffix in CODE_SUFFIXES or "__pycache__" in path.parts:
            continue
        try:
            path = path.resolve()
        except OSError:
            continue
        root = next((r for r in roots if path.is_relative_to(r)), None)
        if root is None:
            continue
        rel = path.relative_to(root)
        if rel.parts[0].endswith((".dist-info", ".egg-info")):
            continue
        for dist in owners.get(rel.parts[0], ()):
            used.setdefault(dist, set()).add(rel.as_posix())
    return {dist: sorted(files) for dist, files in sorted(used.items())}


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:  # unbalanced quotes: the first word is still the program
        return command.split()


def _program(executable, args, path=None) -> str | None:
    """The program a ``subprocess.Popen`` audit event starts (through ``sh -c`` too), found on
    the child's ``PATH`` (``path``, else this process's)."""
    argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args or [])
    argv = [os.fsdecode(a) for a in argv]
    if len(argv) >= 3 and argv[1] == "-c" and Path(argv[0]).name in {"sh", "bash"}:
        argv = _words(argv[2]) or argv
    elif len(argv) == 1 and " " in argv[0]:
        argv = _words(argv[0])
    program = argv[0] if argv else (os.fsdecode(executable) if executable else None)
    return shutil.which(program, path=os.fsdecode(path) if path else None) if program else None


def binaries_used() -> dict[str, dict]:
    """Programs this process started from its own environment (``sys.prefix``), by name, with
    the distribution that installed each and its version."""
    prefix = Path(sys.prefix).resolve()
    found: dict[str, dict] = {}
    for executable, args, path in _SEEN["ran"]:
        program = _program(executable, args, path)
        if program is None or not Path(program).resolve().is_relative_to(prefix):
            continue
        real = Path(program).resolve()
        owner = None
        for dist in metadata.distributions():
            files = [f for f in dist.files or [] if f.name == real.name]
            if any(Path(dist.locate_file(f)).resolve() == real for f in files):
                owner = dist.metadata["Name"]
                break
        found[real.name] = {
            "path": str(real),
            "distribution": owner,
            "version": _version(owner) if owner else None,
        }
    return dict(sorted(found.items()))


def torch_record() -> dict | None:
    """torch's version, its CUDA and cuDNN builds and the GPUs it used; ``None`` without torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    record = {"version": torch.__version__, "cuda": torch.version.cuda, "cudnn": None}
    record["cuda_used"] = bool(torch.version.cuda) and torch.cuda.is_initialized()
    cudnn = getattr(getattr(torch, "backends", None), "cudnn", None)
    if torch.version.cuda and cudnn is not None and cudnn.is_available():
        record["cudnn"] = cudnn.version()
    if record["cuda_used"]:  # pragma: no cover - needs a GPU
        record["devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return record


def environment_record(rule: str | None = None, status: str = "ok") -> dict:
    """What this process ran on (see the module docstring), as a JSON-able dict."""
    from fusion3d import __version__

    owners = metadata.packages_distributions()
    data = package_data_used(owners)
    binaries = binaries_used()
    packages = imported_distributions(owners)
    for dist in list(data) + [b["distribution"] for b in binaries.values() if b["distribution"]]:
        if dist not in packages and _version(dist) is not None:
            packages[dist] = _version(dist)
    if rule is None:
        job = getattr(sys.modules.get("__main__"), "snakemake", None)
        rule = getattr(job, "rule", None)
    return {
        "rule": rule,
        "status": status,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "prefix": sys.prefix,
        },
        "platform": platform.platform(),
        "fusion3d": {"version": __version__, "source": str(Path(__file__).resolve().parent)},
        "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
        "package_data": data,
        "binaries": binaries,
        "torch": torch_record(),
    }


def write_environment_record(
    path: str | os.PathLike, rule: str | None = None, status: str = "ok"
) -> Path:
    """Write :func:`environment_record` to ``path`` (whole or not at all) and stop watching."""
    record = environment_record(rule=rule, status=status)
    _SEEN["active"] = False
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


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
