"""Scheduled retraining through `visionpipe run` (kfp.local), as a schedule runs it:
night 1 publishes; the same data again trains and publishes nothing; a poisoned night
is stopped by validate before training, names the cause, and `latest` does not move."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from benchmarks.validate_nights import poison, write_night
from tests.conftest import VISIONPIPE

pytestmark = pytest.mark.slow


def visionpipe(*args):
    return subprocess.run([VISIONPIPE, *args], capture_output=True, text=True, env={**os.environ})


def scheduled(registry) -> list[str]:
    """k8s/base/run.yaml's settings (keep_splits and the gate on the deployed version, no
    regression allowed), on a short training and the formats the registry serves."""
    reference = f"{registry}/visionpipe-classifier"
    return [
        "--preset",
        "smoke",
        "--set",
        "train.epochs=6",
        "--set",
        f"prepare.keep_splits={reference}",
        "--set",
        f"evaluate.baseline_model={reference}",
        "--set",
        "evaluate.max_regression=0",
        "--set",
        f"push.registry={registry}",
        "--set",
        "export.formats=saved_model,onnx,tflite",
    ]


def test_an_unchanged_night_spends_nothing_and_a_poisoned_one_is_stopped(tmp_path, digits_dir):
    registry = tmp_path / "registry"
    night1 = write_night(tmp_path / "night1", digits_dir, everything=False)
    runs = tmp_path / "runs"
    first = visionpipe(
        "run", "--data", str(night1), "--output", str(runs), "--run-id", "n1", *scheduled(registry)
    )
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((runs / "n1" / "summary.json").read_text())
    assert summary["blessed"] is True and summary["changed"] is True
    assert summary["validation"]["decision"] == "pass"  # nothing deployed yet: nothing compared
    latest = (registry / "visionpipe-classifier" / "latest.json").read_text()
    version = json.loads(latest)["version"]
    published = registry / "visionpipe-classifier" / version
    provenance = json.loads((published / "provenance.json").read_text())
    assert provenance["fingerprint"] == summary["fingerprint"]

    again = visionpipe(
        "run", "--data", str(night1), "--output", str(runs), "--run-id", "n1b", *scheduled(registry)
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"no change since version {version}" in again.stdout
    repeat = json.loads((runs / "n1b" / "summary.json").read_text())
    assert repeat["changed"] is False and version in repeat["decision"]
    assert set(repeat["timings_s"]) == {"total"} and repeat["blessed"] is None
    assert not (runs / "n1b" / "model").exists()
    assert (registry / "visionpipe-classifier" / "latest.json").read_text() == latest
    assert len([p for p in (registry / "visionpipe-classifier").iterdir() if p.is_dir()]) == 1

    poisoned = write_night(tmp_path / "night2", digits_dir)
    poison("swap_3_8", poisoned)
    stopped = visionpipe(
        "run",
        "--data",
        str(poisoned),
        "--output",
        str(runs),
        "--run-id",
        "n2",
        *scheduled(registry),
    )
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("visionpipe: error: validate:") and "nothing was trained" in last
    assert "labelled '8'" in last and "as '3'" in last
    night2 = json.loads((runs / "n2" / "summary.json").read_text())
    assert night2["status"] == "failed" and night2["changed"] is True
    assert any("label_agreement" in line for line in night2["validation"]["anomalies"])
    assert "train" not in night2["timings_s"] and not (runs / "n2" / "model").exists()
    assert (registry / "visionpipe-classifier" / "latest.json").read_text() == latest

    # the next clean night, with all the digits and another seed: validated against night
    # 1's version, blessed, published, and latest moves to it
    clean = write_night(tmp_path / "night3", digits_dir)
    third = visionpipe("run", "--data", str(clean), "--output", str(runs), "--run-id", "n3",
                       *scheduled(registry), "--set", "train.seed=7")  # fmt: skip
    assert third.returncode == 0, third.stderr[-3000:]
    night3 = json.loads((runs / "n3" / "summary.json").read_text())
    assert night3["validation"]["decision"] == "pass" and night3["validation"]["anomalies"] == []
    assert night3["blessed"] is True, night3["blessing_reasons"]
    moved = json.loads((registry / "visionpipe-classifier" / "latest.json").read_text())
    assert moved["version"] != version and night3["artifacts"]["published"] == moved["uri"]
