"""visionpipe explain (Grad-CAM) and the evaluation report's pictures of where the model
looks: a data set built so the answer is known (tests/quadrants.py), real training, the
installed command."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.conftest import VISIONPIPE
from tests.quadrants import quadrant_of, write_quadrant_images


@pytest.fixture(scope="session")
def quadrant_model(tmp_path_factory):
    """small_cnn trained on pictures whose class is only a small patch in one quadrant
    (wider than high, with a distractor square that decides nothing)."""
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.train.config import TrainConfig
    from components.train.core import run as train

    root = tmp_path_factory.mktemp("quadrants")
    quadrants = write_quadrant_images(root / "images", 60, width=60, height=44, seed=3)
    prepare(PrepareConfig(image_size=40), root / "images", root / "dataset")
    train(TrainConfig(epochs=12, early_stopping_patience=12), root / "dataset", root / "model")
    return root, quadrants


@pytest.mark.slow
def test_the_peak_falls_in_the_quadrant_that_decides(quadrant_model, tmp_path):
    root, quadrants = quadrant_model
    with open(root / "dataset" / "splits" / "test.csv") as handle:
        images = [row["uri"] for row in csv.DictReader(handle)]
    done = subprocess.run(
        [VISIONPIPE, "explain", "--model", str(root / "model"), "--output", str(tmp_path),
         *images],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "explain.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows] == images
    right = 0
    for row in rows:
        source = Image.open(row["image"])
        heat = Image.open(tmp_path / row["gradcam"])
        assert heat.mode == "L" and heat.size == source.size  # greyscale, the image's own size
        assert Image.open(tmp_path / row["overlay"]).size == source.size
        x, y = int(row["peak_x"]), int(row["peak_y"])
        assert np.asarray(heat)[y, x] == 255  # the peak is the brightest pixel
        assert row["predicted"] in {"red_blue", "green_magenta", "yellow_cyan"}
        assert 0.0 < float(row["probability"]) <= 1.0
        right += quadrant_of(x, y, *source.size) == quadrants[row["image"]]
    assert right >= 0.8 * len(rows), f"{right} of {len(rows)} peaks in the deciding quadrant"
    assert rows[0]["layer"] == "block2_relu1"  # the last convolutional feature map


@pytest.mark.slow
def test_evaluate_report_shows_gradcam_and_feature_maps(quadrant_model, tmp_path):
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run

    root, _ = quadrant_model
    run(EvaluateConfig(min_accuracy=0.0), root / "dataset", root / "model", tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "Where the model looks (Grad-CAM)" in html and "First convolutional layers" in html
    for name in ("gradcam_gallery.png", "feature_maps.png"):
        assert Image.open(tmp_path / name).size[0] > 300
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    assert len(calibration["model_sha256"]) == 64  # which model.keras the temperature is for


def test_backbone_targets_inside_the_nested_model_and_a_named_layer():
    """Untrained models: only which map is explained and its shape are checked here."""
    from components.infra.errors import UserError
    from components.train.models import build_model
    from components.vision import gradcam

    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    model = build_model("MobileNetV3Small", 64, 3, 0.2)
    cams, classes, probs, layer = gradcam.heatmaps(model, images)
    # the backbone's own output is 2x2 at 64 px: the last map of side >= 4 inside it
    assert layer.startswith("backbone/") and cams.shape == (2, 64, 64)
    assert gradcam.spatial_side(gradcam.choose_target(model).layer) == 4
    assert np.allclose(cams.max(axis=(1, 2)), 1.0) and cams.min() >= 0
    np.testing.assert_allclose(probs, model.predict_on_batch(images)[[0, 1], classes], atol=1e-5)
    named = gradcam.heatmaps(model, images, layer="backbone/conv")
    assert named[3] == "backbone/conv"
    assert not np.allclose(named[0], cams)
    with pytest.raises(UserError, match="no layer 'nope'"):
        gradcam.heatmaps(model, images, layer="nope")
    scratch = build_model("small_cnn", 32, 4, 0.2, width=8)
    maps = gradcam.feature_maps(scratch, images[:, :32, :32].astype(np.uint8))
    assert len(maps) == 2 and [name for name, _ in maps[0]] == ["block0_conv0", "block0_conv1"]
    assert maps[1][0][1].shape == (8, 32, 32)
    assert maps[1][0][1].max() == 1.0 and maps[1][0][1].min() == 0.0


def test_a_class_other_than_the_predicted_one_has_its_own_map():
    """Grad-CAM of class c uses d score_c / d A: with the Dense weights of class 1 zeroed
    to the first channel only, its map is that channel's activation (relu'd, scaled)."""
    from components.train.models import build_model
    from components.vision import gradcam

    model = build_model("small_cnn", 32, 3, 0.0, width=8)
    dense = model.get_layer("probabilities")
    kernel = np.zeros(dense.kernel.shape, np.float32)
    kernel[0, 1] = 1.0
    dense.set_weights([kernel, np.zeros(3, np.float32)])
    images = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3)).astype(np.float32)
    cams = gradcam.heatmaps(model, images, classes=np.array([1]))[0]
    feature = gradcam.explaining_model(model, gradcam.choose_target(model))(images)[0]
    channel = np.maximum(np.asarray(feature)[0, ..., 0], 0)
    assert channel.max() > 0
    np.testing.assert_allclose(cams[0], gradcam.resize_map(channel, 32, 32), atol=1e-4)


def test_explain_refuses_a_missing_model_and_an_unreadable_image_in_one_line(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    done = subprocess.run(
        [VISIONPIPE, "explain", "--model", str(tmp_path / "none"), "--output",
         str(tmp_path / "o"), str(tmp_path / "bad.png")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no model at" in done.stderr


def test_an_ensemble_averages_its_members_maps_and_a_metadata_model_takes_its_rows():
    """Untrained models: an averaged ensemble's map is the mean of its members' maps for
    the ensemble's class; a model with a metadata input is explained with its rows."""
    from components.train.ensemble import average_model
    from components.train.models import build_model, with_metadata
    from components.vision import gradcam

    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    members = [build_model("small_cnn", 32, 3, 0.1, width=4) for _ in range(2)]
    ensemble = average_model(members)
    cams, classes, _, layer = gradcam.heatmaps(ensemble, images)
    assert layer == "mean over 2 members"
    expected = np.mean([gradcam.heatmaps(m, images, classes=classes)[0] for m in members], 0)
    np.testing.assert_allclose(cams, expected, atol=1e-5)
    model = with_metadata(build_model("small_cnn", 32, 3, 0.1, width=4), 2, 3, 0.1)
    rows = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    cams, _, probs, _ = gradcam.heatmaps(model, images, rows)
    assert cams.shape == (2, 32, 32)
    expected = model.predict_on_batch({"image": images, "metadata": rows})
    np.testing.assert_allclose(probs, expected.max(1), atol=1e-5)
