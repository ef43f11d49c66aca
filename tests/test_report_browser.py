"""report.html rendered by headless Chromium: a real page, every section laid out, every image decoded."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionlab.report import compare_runs
from report_fixtures import make_dataset, make_runs

CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = ("summary", "significance", "curves", "confusion", "per-class", "mistakes", "provenance")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"headless Chromium not found at {CHROMIUM}"),
]


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", "--timeout=30000"]
    return subprocess.run([str(CHROMIUM), *flags, *args, page.as_uri()], capture_output=True, text=True,
                          timeout=60, check=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    data = make_dataset(root / "data")
    runs = make_runs(root / "runs", data, seeds=(0, 1), corruptions=True)  # every section, robustness too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASHIONLAB_SKIP_VERIFY", "1")
        compare_runs(runs, root / "report", n_boot=200)
    return root / "report" / "report.html"


def test_sections_laid_out_and_images_decoded(report: Path, tmp_path: Path):
    dom = chromium(tmp_path, report, "--dump-dom").stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', body.group(1))}
    assert attrs.get("data-checked") == "1", "the page's load handler did not run"
    n_images = report.read_text().count("<img ")
    assert n_images == 5 + 2 * 16  # curves, confusion, per class, reliability, robustness; 16 mistakes per model
    assert attrs["data-images-ok"] == f"{n_images}/{n_images}"
    assert attrs["data-empty-sections"] == ""
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in dom


def test_screenshot_is_not_blank(report: Path, tmp_path: Path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, report, f"--screenshot={shot}", "--window-size=1400,4000")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (4000, 1400)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 1000, f"only {len(colours)} distinct colours: a blank or broken page?"
    not_white = (pixels < 240).any(axis=2).mean()
    assert 0.05 < not_white < 0.9, f"{not_white:.0%} of the page is non-white"
