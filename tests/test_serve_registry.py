"""`visionpipe serve REGISTRY/MODEL` on what push published: push writes the reference
profile (monitor_reference.json) of the file serve runs, and serve answers from the
latest version with that version's OOD rule. The session's real digits export is pushed
to a folder registry (no training here); one server for the module."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VISIONPIPE
from tests.test_serve import SERVE_PYTHON, call, infer_body, png, start_server

pytestmark = pytest.mark.skipif(
    not SERVE_PYTHON.is_file(), reason="the serving venv is missing: run `make serve-venv`"
)


@pytest.fixture(scope="module")
def published(tmp_path_factory, exported, evaluation, trained_model, digits_dataset):
    from components.push.config import PushConfig
    from components.push.core import run

    registry = tmp_path_factory.mktemp("registry")
    config = PushConfig(serving="none", registry=str(registry), version="v7")
    run(config, exported, evaluation, model=trained_model, dataset=digits_dataset)
    return registry / "visionpipe-classifier"


def test_push_publishes_the_served_file_s_reference_profile(published):
    from components.vision import monitoring

    profile = json.loads((published / "v7" / monitoring.PROFILE_FILE).read_text())
    benchmark = json.loads((published / "v7" / "benchmark.json").read_text())
    parity = json.loads((published / "v7" / "parity.json").read_text())
    from components.vision.targets import FILES

    assert profile["file"] == FILES[monitoring.served_format(benchmark, parity)]
    assert set(profile["class_frequencies"]) == set(profile["classes"])
    assert abs(sum(profile["class_frequencies"].values()) - 1) < 1e-3
    assert sum(profile["confidence_histogram"]["counts"]) == profile["images"]["test"]
    assert len(profile["embedding"]["mean"]) == profile["embedding"]["width"]
    assert len(profile["embedding"]["projected_sample"][0]) == 32
    assert profile["thresholds"]["distance"] > profile["ood_scores"]["quantiles"]["0.5"]
    assert set(profile["image_stats"]) >= {"brightness_mean", "contrast_mean"}


@pytest.fixture(scope="module")
def server(published, tmp_path_factory):
    yield from start_server([str(published), "--name", "digits", "--top-k", "3"], tmp_path_factory)


def test_serve_answers_from_the_latest_version_as_predict_does(server, published, tmp_path):
    """Raw PNG bytes of real digits: the same top-1 as `predict` on the version's file,
    the published version, and an OOD score from its profile."""
    from sklearn.datasets import load_digits

    from components.predict.core import predict_files

    digits = load_digits()
    paths = []
    for n in range(12):
        pixels = (digits.images[n] * 255 / 16).astype("uint8")
        paths.append(tmp_path / f"{n}.png")
        paths[-1].write_bytes(png(pixels))
    status, answer = call(server["infer"], infer_body([p.read_bytes() for p in paths]))
    assert status == 200, answer
    assert answer["model_version"] == "v7"
    served = published / "v7" / answer["parameters"]["file"]
    expected = predict_files(str(served), [str(p) for p in paths], top_k=3)
    labels = {o["name"]: o["data"] for o in answer["outputs"]}["label"]
    assert labels[::3] == [e["top"][0]["label"] for e in expected]
    assert len({o["name"]: o for o in answer["outputs"]}["ood_score"]["data"]) == 12


def test_without_the_serving_venv_serve_says_how_to_get_it(tmp_path):
    env = {**os.environ, "VISIONPIPE_SERVE_PYTHON": str(tmp_path / "missing" / "python")}
    done = subprocess.run(
        [VISIONPIPE, "serve", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "make serve-venv" in done.stderr


def test_serve_refuses_a_folder_that_is_not_an_export(tmp_path):
    done = subprocess.run(
        [str(SERVE_PYTHON), "-m", "components.serve", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 2, done.stderr
    assert "neither a published version" in done.stderr
