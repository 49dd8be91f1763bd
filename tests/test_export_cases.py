"""Export edge cases: mixed precision, augmentation inside the model, Flex ops."""

import json

import numpy as np
import pytest

from components.export.config import ExportConfig

pytestmark = pytest.mark.slow


def fit_and_save(model, dataset, folder, epochs=2):
    """Train `model` briefly on the prepared digits and save it as a train stage would."""
    from components.vision.records import load_split_arrays

    images, labels, _ = load_split_arrays(dataset, "train", 32)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images.astype("float32"), labels, epochs=epochs, batch_size=64, verbose=0)
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    return folder


def tflite_op_names(path):
    from ai_edge_litert.interpreter import Interpreter

    return {op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()}


def test_mixed_float16_model_exports_to_every_format(tmp_path, digits_dataset):
    import keras

    from components.export.core import run
    from components.train.models import small_cnn

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = small_cnn(32, 10, 0.2, width=8)
        assert model.get_layer("block0_conv0").compute_dtype == "float16"
        folder = fit_and_save(model, digits_dataset, tmp_path / "model")
    finally:
        keras.config.set_dtype_policy("float32")
    # a 2-epoch model has thin margins: the quantized formats' one-point bar is tested on a
    # trained model (test_export.py); here the question is whether every format exports
    config = ExportConfig(benchmark_runs=3, max_quantized_accuracy_drop=0.05)
    result = run(config, digits_dataset, folder, tmp_path / "export")
    for name in ("tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx"):
        assert result["parity"][name]["passed"], (name, result["parity"][name])
    for name in ("tflite", "onnx"):  # float32 formats of the float32 rebuild: exact
        assert result["parity"][name]["top1_agreement"] == 1.0
    # rebuilt in float32: no float16 casts survive into the float32 TFLite graph
    assert "CAST" not in tflite_op_names(tmp_path / "export" / "model.tflite")


def test_augmentation_layers_inside_a_model_never_reach_the_export(tmp_path, digits_dataset):
    import keras
    import onnx

    from components.export.core import run

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.RandomRotation(0.1)(inputs)
    x = keras.layers.RandomTranslation(0.1, 0.1)(x)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    folder = fit_and_save(keras.Model(inputs, outputs), digits_dataset, tmp_path / "model")
    config = ExportConfig(formats=["tflite", "onnx"], benchmark_runs=3)
    result = run(config, digits_dataset, folder, tmp_path / "export")
    assert result["parity"]["tflite"]["top1_agreement"] >= 0.999
    ops = tflite_op_names(tmp_path / "export" / "model.tflite")
    assert not [op for op in ops if "RANDOM" in op.upper()], ops
    graph = onnx.load(str(tmp_path / "export" / "model.onnx")).graph
    assert not [n.op_type for n in graph.node if "Random" in n.op_type]


def test_a_model_needing_flex_ops_fails_naming_the_ops(tmp_path):
    import keras
    import tensorflow as tf

    from components.export import convert

    class Determinant(keras.layers.Layer):
        def call(self, x):
            square = tf.transpose(x[:, :4, :4, :], [0, 3, 1, 2])  # (B, 3, 4, 4)
            return tf.linalg.det(square)  # (B, 3): MatrixDeterminant is not a TFLite builtin

    inputs = keras.Input((32, 32, 3), name="image")
    outputs = keras.layers.Dense(2, activation="softmax")(Determinant()(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(convert.ExportFailed, match=r"builtin set: .*MatrixDeterminant"):
        convert.write_tflite(model, 32, tmp_path / "model.tflite")
    assert not (tmp_path / "model.tflite").exists()


def test_int8_tflite_takes_and_returns_uint8(tmp_path, digits_dataset, trained_model):
    from ai_edge_litert.interpreter import Interpreter

    from components.export.core import run

    config = ExportConfig(formats=["tflite_int8"], benchmark_runs=3)
    result = run(config, digits_dataset, trained_model, tmp_path / "export")
    interpreter = Interpreter(model_path=str(tmp_path / "export" / "model_int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    # raw pixels are the input as they are (what MediaPipe and the Task Library feed)
    assert interpreter.get_input_details()[0]["quantization"] == (1.0, 0)
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [1, 32, 32, 3]
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    assert result["parity"]["tflite_int8"]["accuracy_drop"] <= 0.01


def test_quantized_gate_allows_one_image_on_a_tiny_test_split():
    from components.export.core import check

    config = ExportConfig()  # 1 point
    small = {"accuracy": 17 / 18, "top1_agreement": 17 / 18, "count": 18}
    check("tflite_int8", small, 1.0, config)
    assert small["passed"] and small["max_accuracy_drop"] == round(1 / 18, 6)
    large = {"accuracy": 0.985, "top1_agreement": 0.985, "count": 270}
    check("tflite_int8", large, 1.0, config)  # 4 of 270 lost: 1.5 points > 1 point
    assert not large["passed"] and large["max_accuracy_drop"] == 0.01


def test_a_failed_verification_is_one_line_exit_1_and_keeps_its_evidence(
    tmp_path, digits_dataset, trained_model, monkeypatch, capsys
):
    """A converter that really mismatches cannot be produced on demand, so ONNX Runtime's
    real predictions are rolled by one class before the (real) parity check sees them."""
    from components.export import core
    from components.vision import runtimes
    from pipelines.cli import main

    real = runtimes.onnx_predictor

    def shifted(path, **kwargs):
        predictor = real(path, **kwargs)
        return lambda *args, **kwargs: np.roll(predictor(*args, **kwargs), 1, axis=1)

    monkeypatch.setattr(core.runtimes, "onnx_predictor", shifted)
    out = tmp_path / "deep" / "export"
    code = main(
        [
            "export",
            "--dataset",
            str(digits_dataset),
            "--model",
            str(trained_model),
            "--output",
            str(out),
            "--set",
            "formats=[onnx]",
            "--set",
            "benchmark_runs=2",
        ]
    )
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in err, err
    assert last.startswith("visionpipe: failed: exported model does not match Keras")
    assert "onnx agrees on 0." in last
    kept = tmp_path / "deep" / "export.failed"
    assert str(kept) in last
    parity = json.loads((kept / "parity.json").read_text())
    assert parity["onnx"]["passed"] is False and parity["onnx"]["top1_agreement"] < 0.5
    assert (kept / "model.onnx").is_file() and not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["EfficientNetB0", "DenseNet121"])
def test_backbones_with_normalization_export_to_onnx_with_only_their_inputs(name, tmp_path):
    """Their Normalization constants used to become extra ONNX inputs nobody can feed.
    At 32 px, the smallest input both take: the constants are the same at any size."""
    import onnx

    from components.export import convert
    from components.train.models import build_model
    from components.vision import runtimes

    model = build_model(name, 32, 3, 0.1, "none", 8, 0.9, 0)
    path = tmp_path / "model.onnx"
    convert.write_onnx(model, 32, path, 17, ["a", "b", "c"])
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["image"]
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(convert.serving_model(model, 32).predict_on_batch(images))
    np.testing.assert_allclose(runtimes.onnx_predictor(path)(images), expected, atol=1e-5)
