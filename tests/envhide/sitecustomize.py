"""Run every Snakemake script job with only its rule's environment importable.

Put this folder first on ``PYTHONPATH`` and name, in ``FUSION3D_ENV_ALLOWED``, a JSON file
``{rule: [canonical distribution names]}`` (what the rule's env file installs,
``tests/envcheck.py``). In a process that runs a rule's script (its ``__main__`` holds the
``snakemake`` object), a top-level module of an installed distribution that is not on the
rule's list cannot be found (ModuleNotFoundError on import, None from ``find_spec``) and its
metadata is gone (``importlib.metadata``), as in a conda env that lacks it. Other processes
(the Snakemake driver, helper interpreters) are left alone. Used by
``tests/e2e/test_envs_isolated.py``.
"""

import importlib.abc
import importlib.machinery
import importlib.metadata
import json
import os
import re
import sys

_STATE = {}


def _allowed_for_this_job():
    """The distributions this process's rule may import, or None outside a rule's script."""
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    rule = getattr(job, "rule", None)
    if not isinstance(rule, str):
        return None
    if "allowed" not in _STATE:
        with open(os.environ["FUSION3D_ENV_ALLOWED"], encoding="utf-8") as handle:
            table = json.load(handle)
        if rule not in table:
            raise RuntimeError(
                f"envhide: rule {rule} is not in {os.environ['FUSION3D_ENV_ALLOWED']}"
            )
        _STATE["owners"] = importlib.metadata.packages_distributions()  # all, before hiding
        _STATE["allowed"] = set(table[rule]) | {"fusion3d", "snakemake"}
    return _STATE["allowed"]


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


class _HideOtherEnvs(importlib.abc.MetaPathFinder):
    """The path finder, blind to the top-level modules of distributions the job's rule lacks:
    ``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` gives None, as in an
    environment where they are not installed."""

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if "." not in name and name not in sys.stdlib_module_names:
            allowed = _allowed_for_this_job()
            owners = {_canonical(d) for d in _STATE.get("owners", {}).get(name, ())}
            if allowed is not None and owners and not owners & allowed:
                return None
        return self.inner.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        """The installed distributions, less the hidden ones (importlib.metadata asks here)."""
        allowed = _STATE.get("allowed") if "owners" in _STATE else None
        for dist in self.inner.find_distributions(*args, **kwargs):
            if allowed is None or _canonical(dist.metadata["Name"] or "") in allowed:
                yield dist

    def invalidate_caches(self):
        self.inner.invalidate_caches()


if os.environ.get("FUSION3D_ENV_ALLOWED"):
    sys.meta_path[:] = [
        _HideOtherEnvs(f) if f is importlib.machinery.PathFinder else f for f in sys.meta_path
    ]
