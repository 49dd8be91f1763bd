"""Temperature scaling: fitted on val, measured on test, baked into every exported format."""

import json

import numpy as np
import pytest

from components.evaluate.calibration import apply_temperature, calibrate, fit_temperature


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def over_confident(n=4000, k=5, true_temperature=2.5, seed=0):
    """Labels drawn from softmax(z / 2.5); the model reports softmax(z): over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, k))
    truth = softmax(logits / true_temperature)
    labels = np.array([rng.choice(k, p=p) for p in truth])
    return softmax(logits), labels


def test_the_fitted_temperature_recovers_the_one_that_made_the_labels():
    probs, labels = over_confident()
    assert fit_temperature(probs, labels) == pytest.approx(2.5, rel=0.1)


def test_scaling_keeps_the_top_class_and_t1_is_the_identity():
    probs, _ = over_confident(n=200)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-12)
    for t in (0.3, 2.0):
        scaled = apply_temperature(probs, t)
        assert (scaled.argmax(1) == probs.argmax(1)).all()
        np.testing.assert_allclose(scaled.sum(1), 1.0)


def test_calibration_lowers_val_ece_or_keeps_t1():
    probs, labels = over_confident()
    found = calibrate(probs[:2000], labels[:2000], bins=15)
    assert found["kept"] and found["val_after"]["ece"] < found["val_before"]["ece"]
    # a model whose labels follow its own probabilities is calibrated: T stays at 1 or near
    calibrated_probs, calibrated_labels = over_confident(true_temperature=1.0, seed=1)
    again = calibrate(calibrated_probs, calibrated_labels, bins=15)
    assert again["temperature"] == 1.0 or abs(again["temperature"] - 1.0) < 0.1


def test_the_keras_layer_is_the_same_function_and_saves(tmp_path):
    import keras

    from components.vision.layers import TemperatureScaling

    probs, _ = over_confident(n=64)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, TemperatureScaling(1.7)(inputs))
    np.testing.assert_allclose(
        model.predict(probs.astype(np.float32), verbose=0), apply_temperature(probs, 1.7), atol=1e-6
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.layers[-1].temperature == pytest.approx(1.7)


@pytest.mark.slow
def test_evaluate_records_both_and_export_ships_the_calibrated_probabilities(
    evaluation, exported, trained_model, digits_dataset
):
    from components.vision import runtimes
    from components.vision.models import load_model
    from components.vision.records import load_split_arrays

    metrics = json.loads((evaluation / "metrics.json").read_text())
    calibration = json.loads((evaluation / "calibration.json").read_text())
    assert {"ece", "ece_uncalibrated", "log_loss_uncalibrated", "temperature"} <= set(metrics)
    assert metrics["temperature"] == calibration["temperature"]
    assert calibration["fitted_on"] == "val" and calibration["count"] > 0
    if calibration["kept"]:
        assert calibration["val_after"]["ece"] <= calibration["val_before"]["ece"]
    images, _, _ = load_split_arrays(digits_dataset, "test", 32)
    raw = load_model(trained_model).predict(images[:64].astype(np.float32), verbose=0)
    expected = apply_temperature(raw.astype(np.float64), metrics["temperature"])
    for name in ("model.onnx", "model.tflite"):
        predictor = (
            runtimes.onnx_predictor if name.endswith(".onnx") else runtimes.tflite_predictor
        )(exported / name)
        np.testing.assert_allclose(predictor(images[:64].astype(np.float32)), expected, atol=2e-5)
    # every format verified, except that a quantized variant may be dropped, as
    # export.on_variant_failure: drop does (an int8 file can lose its point on some
    # trainings); the contract's formats never are
    from components.export.config import OPTIONAL

    parity = json.loads((exported / "parity.json").read_text())
    for name, result in parity.items():
        assert result.get("passed", True) or (result.get("dropped") and name in OPTIONAL), name
    assert (
        json.loads((exported / "config.json").read_text())["temperature"] == metrics["temperature"]
    )
    report = (evaluation / "report.md").read_text()
    assert "Expected calibration error" in report


def test_a_val_split_without_mistakes_gives_a_finite_temperature():
    """Every val prediction right: plain NLL would sharpen without end (T at the bound);
    the weak prior towards 1 keeps T moderate."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, 268)
    logits = rng.normal(0, 1, (268, 10))
    logits[np.arange(268), labels] += 5.0  # every top-1 is right, with softmax ~0.9
    probs = softmax(logits)
    assert (probs.argmax(1) == labels).all()
    temperature = fit_temperature(probs, labels)
    assert 0.2 < temperature < 1.0


@pytest.fixture(scope="module")
def forced_temperature(tmp_path_factory, evaluation, trained_model, digits_dataset):
    """A run folder (model/, evaluation/) whose calibration.json says T = 1.7 whatever
    evaluate fitted, and an export of it (TFLite and ONNX): a T of 1 would make every
    check below pass with the temperature ignored."""
    import shutil

    from components.export.config import ExportConfig
    from components.export.core import run

    run_dir = tmp_path_factory.mktemp("forced") / "run"
    shutil.copytree(trained_model, run_dir / "model")
    shutil.copytree(evaluation, run_dir / "evaluation")
    calibration = json.loads((evaluation / "calibration.json").read_text())
    calibration["temperature"] = 1.7
    (run_dir / "evaluation" / "calibration.json").write_text(json.dumps(calibration))
    config = ExportConfig(formats=["tflite", "onnx"], benchmark_runs=2)
    run(config, digits_dataset, run_dir / "model", run_dir / "export", run_dir / "evaluation")
    return run_dir


@pytest.mark.slow
def test_every_format_and_predict_on_keras_ship_a_temperature_other_than_one(
    forced_temperature, digits_dataset, tmp_path, capsys
):
    """`visionpipe predict` runs in this process (pipelines.cli.main, the console script's
    entry point: the same notes on stderr and exit codes, without a ~5 s TensorFlow import
    per call); the exit-2 refusal at the end is the installed command in its own process."""
    import subprocess

    from PIL import Image

    from components.vision import runtimes
    from components.vision.models import load_model
    from components.vision.records import load_split_arrays
    from tests.conftest import VISIONPIPE

    run_dir = forced_temperature
    images, _, _ = load_split_arrays(digits_dataset, "test", 32)
    batch = images[:32].astype(np.float32)
    raw = load_model(run_dir / "model").predict(batch, verbose=0).astype(np.float64)
    expected = apply_temperature(raw, 1.7)
    assert np.abs(expected - raw).max() > 0.01  # the check below can tell them apart
    for name in ("model.onnx", "model.tflite"):
        predictor = (
            runtimes.onnx_predictor if name.endswith(".onnx") else runtimes.tflite_predictor
        )(run_dir / "export" / name)
        np.testing.assert_allclose(predictor(batch), expected, atol=2e-5, err_msg=name)
    assert json.loads((run_dir / "export" / "config.json").read_text())["temperature"] == 1.7

    Image.fromarray(images[0]).save(tmp_path / "a.png")

    def predicted(model, *extra):
        from pipelines.cli import main

        capsys.readouterr()  # drop what came before
        code = main(
            ["predict", "--model", str(model), str(tmp_path / "a.png"), "--json",
             "--top-k", "10", *extra]
        )  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 0, err
        top = json.loads(out)[0]["top"]
        return {t["label"]: t["probability"] for t in top}, err

    onnx, _ = predicted(run_dir / "export" / "model.onnx")
    keras_file, note = predicted(run_dir / "model" / "model.keras")  # ../evaluation found
    assert "temperature 1.700" in note
    assert keras_file == pytest.approx(onnx, abs=1e-5)
    # a calibration fitted for another model.keras is not applied, and that is said
    calibration = run_dir / "evaluation" / "calibration.json"
    kept = calibration.read_text()
    calibration.write_text(json.dumps({**json.loads(kept), "model_sha256": "0" * 64}))
    try:
        unscaled, note = predicted(run_dir / "model" / "model.keras")
        assert "uncalibrated" in note and "fitted for another model.keras" in note
        label = max(unscaled, key=unscaled.get)
        assert unscaled[label] == pytest.approx(raw[0].max(), abs=1e-5)
        done = subprocess.run(
            [VISIONPIPE, "predict", "--model", str(run_dir / "model" / "model.keras"),
             "--calibration", str(run_dir / "evaluation"), str(tmp_path / "a.png")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 2 and "another model.keras" in done.stderr
    finally:
        calibration.write_text(kept)
