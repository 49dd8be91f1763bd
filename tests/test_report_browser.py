"""The evaluation report renders in a real headless browser with every section present."""

import shutil
import subprocess

import numpy as np
import pytest

from components.evaluate.config import EvaluateConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = (
    "Gate",
    "Headline metrics",
    "Per class",
    "Confusion matrix",
    "Most confused pairs",
    "Calibration",
    "Misclassified test images",
    "Error gallery",
    "Nearest training images",
    "Likely label errors",
    "Slices",
    "Robustness",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (`make system-deps`)"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory, digits_dataset, trained_model):
    from components.evaluate.core import run

    out = tmp_path_factory.mktemp("report") / "evaluation"
    run(EvaluateConfig(), digits_dataset, trained_model, out)
    return out / "report.html"


def chromium(tmp_path, *args):
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_dom_has_every_section_and_inline_images(tmp_path, report):
    done = chromium(tmp_path, "--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in done.stdout, section
    # self-contained: every picture is inline, none is a link to a file
    assert done.stdout.count("<img") == done.stdout.count('src="data:image/png;base64,') >= 3


def test_report_screenshot(tmp_path, report):
    from PIL import Image

    shot = tmp_path / "report.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400)
    assert len(np.unique(np.asarray(image))) > 20  # rendered content, not a blank page
