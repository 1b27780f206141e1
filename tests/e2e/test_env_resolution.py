"""Each env file on its own: pip resolves its lines together, and what it installs covers what
its rules need (``tests/envcheck.py``), read from pip's resolution instead of this venv.

Slow and needs the package index (``pip install --dry-run --report``: metadata only, nothing is
installed). The PyTorch wheel indexes of the env files (``--extra-index-url``) are left out, and
torch is held at 2.13.0 (the build on this machine's disk): the check is of the other lines.
"""

from __future__ import annotations

import json
import subprocess
import sys

import envcheck
import pytest
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

#: The envs some rule runs in (a driver's env runs no job).
STAGES = sorted({r.env for r in envcheck.parse_rules() if r.env is not None})


def pip_lines(stage: str) -> list[str]:
    env = envcheck.yaml.safe_load((envcheck.REPO / "envs" / f"{stage}.yaml").read_text())
    lines = [line for dep in env["dependencies"] if isinstance(dep, dict) for line in dep["pip"]]
    return [line.split("#")[0].strip() for line in lines if not line.startswith("-")]


def resolve(stage: str, tmp_path) -> dict[str, str]:
    """Distribution -> version that pip would install for ``envs/<stage>.yaml`` alone."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(pip_lines(stage)) + "\n")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    report = tmp_path / "report.json"
    command = [
        *(sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"),
        *("--report", str(report), "-r", str(requirements), "-c", str(constraints)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    offline = ("NewConnectionError", "Temporary failure in name resolution", "Max retries")
    if done.returncode != 0 and any(o in done.stderr for o in offline):
        pytest.skip(f"the package index cannot be reached: {done.stderr[-300:]}")
    assert done.returncode == 0, f"envs/{stage}.yaml does not resolve: {done.stderr[-2000:]}"
    installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


@pytest.mark.parametrize("stage", STAGES)
def test_env_resolves_on_its_own_and_installs_what_its_rules_need(stage, tmp_path):
    resolved = resolve(stage, tmp_path)
    for line in pip_lines(stage):
        req = envcheck.Requirement(line)
        name = canonicalize_name(req.name)
        assert name in resolved, f"envs/{stage}.yaml: {line} not installed"
        assert req.specifier.contains(resolved[name], prereleases=True), (line, resolved[name])
    missing = []
    for rule in envcheck.parse_rules():
        if rule.env == stage and rule.script is not None:
            needs = envcheck.script_needs(rule.script).distributions
            missing += [f"{rule.name}: {d}" for d in sorted(set(needs) - set(resolved))]
    assert not missing, f"envs/{stage}.yaml installs none of: {missing}"
