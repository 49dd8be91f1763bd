"""Preflight: the debugging checklist before the long fit, on real digits and a real model."""

import json
import math
import subprocess
import time

import numpy as np
import pytest

from components.train import preflight
from tests.conftest import VISIONPIPE


def test_a_batch_scaled_twice_is_flagged():
    scaled = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)  # 0..1
    record = preflight.look_at_batch(scaled)
    assert record["shape"] == [4, 8, 8, 3] and record["dtype"] == "float32"
    assert "already scaled to 0..1" in record["flags"][0]
    raw = (scaled * 255).round()
    assert preflight.look_at_batch(raw)["flags"] == []
    assert "outside the 0..255" in preflight.look_at_batch(raw * 4 - 300)["flags"][0]


def test_unshuffled_labels_are_flagged():
    classes = ["a", "b", "c"]
    only_a = [(None, np.eye(3)[[0] * 32]) for _ in range(10)]
    record = preflight.label_histogram(only_a, classes, {"a": 100, "b": 100, "c": 100})
    assert record["observed"] == {"a": 320, "b": 0, "c": 0}
    assert "b, c never appear" in record["flags"][0]
    mixed = [(None, np.eye(3)[[0, 1, 2] * 10]) for _ in range(10)]
    assert preflight.label_histogram(mixed, classes, {"a": 1, "b": 1, "c": 1})["flags"] == []


def test_vanishing_exploding_and_non_finite_gradients_are_flagged():
    norms = {"conv1": 0.5, "conv2": 0.3, "dead": 1e-12, "hot": 5e4, "bad": math.nan}
    flags = " | ".join(preflight.gradient_flags(norms))
    assert "dead: vanishing" in flags and "hot: exploding" in flags
    assert "bad: non-finite" in flags and "conv1" not in flags


@pytest.mark.slow
def test_a_learning_rate_that_cannot_learn_stops_before_the_fit(tmp_path, digits_dataset):
    started = time.monotonic()
    done = subprocess.run(
        [
            VISIONPIPE,
            "train",
            "--dataset",
            str(digits_dataset),
            "--output",
            str(tmp_path / "model"),
            "--set",
            "learning_rate=1e-9",
        ],
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("visionpipe: error")]
    assert "preflight check overfit-one-batch failed" in error and "learning rate" in error
    assert "Traceback" not in done.stderr
    assert "fitting" not in done.stderr  # stopped before the first epoch
    assert not (tmp_path / "model" / "model.keras").exists()
    print(f"stopped after {elapsed:.1f} s")


@pytest.mark.slow
def test_a_normal_run_passes_and_records_the_checklist(trained_model):
    record = json.loads((trained_model / "preflight.json").read_text())
    assert record["passed"] and record["mode"] == "fail"
    assert record["batch"]["shape"][1:] == [32, 32, 3]
    assert max(record["batch"]["channel_max"]) > 1.0  # raw 0..255 pixels
    assert record["labels"]["labels_seen"] > 0 and len(record["labels"]["observed"]) == 10
    overfit = record["overfit_one_batch"]
    assert overfit["passed"] and overfit["loss_after"] < overfit["loss_before"]
    assert overfit["loss_drop"] >= overfit["min_loss_drop"]
    norms = record["gradients"]["per_layer_norm"]
    assert norms and all(math.isfinite(n) and n > 0 for n in norms.values())
    assert "Total params" in (trained_model / "summary.txt").read_text()


@pytest.mark.slow
def test_preflight_leaves_the_fit_where_it_was(tmp_path, digits_dataset):
    """The checklist trains a copy of nothing: the weights it moved are put back."""
    from components.train.config import TrainConfig
    from components.train.core import build_and_compile, make_input_pipelines, start_session

    config = TrainConfig(epochs=1, width=8)
    s = start_session(config, digits_dataset)
    make_input_pipelines(s)
    build_and_compile(s)
    before = [w.copy() for w in s.model.get_weights()]
    record = preflight.run(s, tmp_path)
    assert record["overfit_one_batch"]["passed"]
    after = s.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert s.fitted.optimizer.iterations.numpy() == 0  # the run's optimizer never stepped


def test_the_model_is_drawn_with_graphviz_or_the_reason_is_recorded(tmp_path, monkeypatch):
    """model.png with pydot and graphviz's `dot` (make system-deps, the images); with
    `dot` off the PATH the record says skipped and why, and nothing fails."""
    import shutil

    from PIL import Image

    from components.train.models import build_model
    from components.train.preflight import describe_model

    model = build_model("small_cnn", 16, 3, 0.1, width=4)
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed here (make system-deps installs it)")
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    assert describe_model(model, drawn)["plot"] == "model.png"
    assert Image.open(drawn / "model.png").size[1] > 500  # a tall picture of 20-odd layers
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bare = tmp_path / "bare"
    bare.mkdir()
    record = describe_model(model, bare)
    assert record["plot"].startswith("skipped: ") and len(record["plot"]) > 20
    assert not (bare / "model.png").exists()
