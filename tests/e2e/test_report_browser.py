"""The report and a viewer page of the tiny study, opened in headless Chromium.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it when it runs as root with
apt); the test installs nothing and is skipped, with the reason, where no binary is found.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.slow

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)


def open_in_chromium(page, screenshot, size="1100,1600") -> str:
    """Load ``page`` from its file in headless Chromium, screenshot it; return the browser log."""
    if CHROMIUM is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome) on PATH")
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={size}",
            "--virtual-time-budget=10000",
            f"--screenshot={screenshot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert screenshot.exists(), result.stderr[-3000:]
    return result.stderr


def console_errors(log: str) -> list[str]:
    """The page's console errors and uncaught exceptions in Chromium's log."""
    return [
        line
        for line in log.splitlines()
        if "CONSOLE" in line and re.search(r"Uncaught|Error|error", line)
    ]


def test_viewer_page_draws_every_volume_without_console_errors(tiny_study, tmp_path):
    results = tiny_study / "results"
    pages = sorted((results / "viewer").glob("*.html"))
    assert len(pages) == 4
    # viewer.report (default: figures): the report embeds the figure subject's page only
    embedded = sorted((results / "report" / "viewer").glob("*.html"))
    assert len(embedded) == 1 and (results / "viewer" / embedded[0].name).is_file()
    split = pd.read_csv(results / "split" / "split.tsv", sep="\t")
    assert split.set_index("subject_id").at[embedded[0].stem, "split"] == "test"
    # viewer.fused_splits (default: test): only the test subject's page carries fused volumes
    with_fused = [p.stem for p in pages if 'id="canvas-fused"' in p.read_text()]
    assert with_fused == [embedded[0].stem]
    shot = tmp_path / "viewer.png"
    log = open_in_chromium(embedded[0], shot)
    assert console_errors(log) == []
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    views = pixels[100:1000]  # the T1, PET and fused views
    assert views.std() > 20, "the viewer's canvases are blank"


def test_report_opens_on_the_study(tiny_study, tmp_path):
    report = tiny_study / "report.html"
    run_snakemake(tiny_study, "--report", str(report))
    text = report.read_text(encoding="utf-8")
    for needle in ("Cohort", "Table 1", "QC table", "Viewer"):
        assert needle in text, needle
    # the three pages not embedded are linked as files beside the report
    embedded = {p.stem for p in (tiny_study / "results" / "report" / "viewer").glob("*.html")}
    others = {p.stem for p in (tiny_study / "results" / "viewer").glob("*.html")} - embedded
    linked = set(re.findall(r'href=\\?"viewer/([^"\\]+)\.html', text))
    assert len(others) == 3 and linked == others
    log = open_in_chromium(report, tmp_path / "report.png")
    assert console_errors(log) == []
