"""Export: real LiteRT and ONNX Runtime inference agrees with the Keras model."""

import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from components.export.config import ExportConfig
from tests.conftest import VISIONPIPE

pytestmark = pytest.mark.slow


def test_model_card_test_metrics_come_from_the_evaluation_input(exported, evaluation):
    metrics = json.loads((evaluation / "metrics.json").read_text())
    card = (exported / "model_card.md").read_text()
    assert "## Test metrics" in card
    assert f"Accuracy {metrics['accuracy']:.4f}" in card


def test_export_folder_contract(exported):
    for name in (
        "model.tflite",
        "model.onnx",
        "labels.txt",
        "parity.json",
        "benchmark.json",
        "model_card.md",
        "config.json",
        "saved_model/saved_model.pb",
    ):
        assert (exported / name).exists(), name
    assert (exported / "labels.txt").read_text().split() == [str(d) for d in range(10)]


def test_every_format_agrees_with_keras_on_the_test_split(exported):
    parity = json.loads((exported / "parity.json").read_text())
    for name in ("tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx_int8"):
        assert parity[name]["count"] == 270 and parity[name]["passed"]
        assert parity[name]["accuracy_drop"] <= 0.01  # quantized: at most one point lost
        assert parity[name]["top1_agreement"] >= 0.98  # a near-tie may flip on this 8-epoch model
    assert parity["tflite_fp16"]["max_abs_diff"] < 5e-3
    for name in ("tflite", "onnx"):  # float32: the same function, so the same answers
        assert parity[name]["count"] == 270 and parity[name]["passed"]
        assert parity[name]["top1_agreement"] >= 0.999
        assert parity[name]["max_abs_diff"] < 1e-4
        assert parity[name]["accuracy"] == pytest.approx(parity["keras"]["accuracy"], abs=0.005)
    # the SavedModel is verified like the rest, through its serving signature
    assert parity["saved_model"]["count"] == 270 and parity["saved_model"]["passed"]
    assert parity["saved_model"]["top1_agreement"] >= 0.999
    assert parity["saved_model"]["max_abs_diff"] < 1e-4
    benchmark = json.loads((exported / "benchmark.json").read_text())
    assert set(benchmark) == set(parity)
    assert benchmark["onnx"]["runtime"] == "CPUExecutionProvider"  # no GPU here
    assert benchmark["saved_model"]["runtime"] == "tensorflow"
    assert benchmark["tflite"]["runtime"] == "litert"
    assert all(b["median_ms"] > 0 and b["size_bytes"] > 0 for b in benchmark.values())
    assert all(b["batch32_images_per_s"] > 0 for b in benchmark.values())
    card = (exported / "model_card.md").read_text()
    for heading in ("## Data", "## Training", "## Export parity", "## Speed", "## Intended use"):
        assert heading in card


def test_onnx_has_dynamic_batch_and_labels(exported):
    import onnx

    model = onnx.load(str(exported / "model.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [0, 0, 0, 3]  # batch, height and width are dynamic
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["labels"]) == [str(d) for d in range(10)]
    assert meta["image_size"] == "32"


def test_server_formats_resize_any_image_size_inside(exported, trained_model):
    import keras

    from components.export import convert
    from components.vision import runtimes
    from components.vision.models import with_temperature

    model = keras.models.load_model(trained_model / "model.keras", compile=False)
    temperature = json.loads((exported / "config.json").read_text())["temperature"]
    reference = convert.serving_model(with_temperature(model, temperature), 32)
    images = np.random.default_rng(0).integers(0, 256, (3, 57, 41, 3)).astype(np.float32)
    expected = reference.predict_on_batch(images)
    for name, predictor in (
        ("onnx", runtimes.onnx_predictor(exported / "model.onnx")),
        ("saved_model", runtimes.saved_model_predictor(exported / "saved_model")),
    ):
        np.testing.assert_allclose(predictor(images), expected, atol=1e-5, err_msg=name)


def test_tflite_files_take_one_image_of_the_training_size(exported):
    from ai_edge_litert.interpreter import Interpreter

    for name in (
        "model.tflite",
        "model_fp16.tflite",
        "model_dynamic_int8.tflite",
        "model_int8.tflite",
    ):
        (detail,) = Interpreter(model_path=str(exported / name)).get_input_details()
        assert list(detail["shape_signature"]) == [1, 32, 32, 3], name


def test_predict_cli_matches_keras_on_sample_images(tmp_path, exported, trained_model, digits_dir):
    import keras

    from components.vision.images import load_for_model

    files = [str(next((digits_dir / str(d)).iterdir())) for d in (0, 3, 8)]
    model = keras.models.load_model(trained_model / "model.keras", compile=False)
    expected = [
        str(int(np.argmax(model(load_for_model(f, 32)[None].astype("float32"))))) for f in files
    ]
    for artifact in ("model.tflite", "model_int8.tflite", "model.onnx", "saved_model"):
        done = subprocess.run(
            [
                VISIONPIPE,
                "predict",
                "--model",
                str(exported / artifact),
                *files,
                "--json",
                "--top-k",
                "2",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results = json.loads(done.stdout)
        assert [r["top"][0]["label"] for r in results] == expected, artifact
        assert all(len(r["top"]) == 2 for r in results)


def test_labels_travel_inside_tflite_and_onnx_files(tmp_path, exported):
    import shutil

    from components.vision.packed import read_attached_labels

    digits = [str(d) for d in range(10)]
    for name in (
        "model.tflite",
        "model_fp16.tflite",
        "model_dynamic_int8.tflite",
        "model_int8.tflite",
    ):
        assert read_attached_labels(exported / name) == digits, name
    # a model file copied away from labels.txt still names its classes
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(exported / "model.tflite", lone)
    shutil.copy(exported / "model.onnx", lone)
    from components.vision.inference import load_labels

    assert load_labels(lone / "model.tflite") == digits
    assert load_labels(lone / "model.onnx") == digits


def test_predict_refuses_a_bad_image_with_exit_2(tmp_path, exported):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    done = subprocess.run(
        [VISIONPIPE, "predict", "--model", str(exported / "model.onnx"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not an image" in done.stderr


def test_png_round_trip_matches_training_pixels(tmp_path, digits_dir):
    from components.vision.images import load_for_model

    array = load_for_model(str(next((digits_dir / "5").iterdir())), 32)
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert Image.fromarray(array).size == (32, 32)


def test_model_card_says_how_each_runtime_calls_the_files(exported):
    import onnx

    onnx.checker.check_model(str(exported / "model.onnx"), full_check=True)
    card = (exported / "model_card.md").read_text()
    assert "signature `serving_default`" in card and "output `probabilities`" in card
    assert "POST http://<host>:8501/v1/models/visionpipe:predict" in card
    request = next(line for line in card.splitlines() if line.startswith('{"signature_name"'))
    assert json.loads(request)["instances"][0]["image"].startswith("<32x32x3")
    assert "opset 17" in card and "`image` (" in card and "`probabilities` (" in card
    shipping = card.split("## Which file to ship where", 1)[1].split("\n## ", 1)[0]
    assert "`model_int8.tflite`" in shipping and "Server CPUs" in shipping
    assert "x." in shipping or "x," in shipping  # the measured fp32/int8 ratio


def test_onnx_runs_on_cuda_where_onnx_runtime_has_it():
    """The choice itself (no GPU here): CUDA first when onnxruntime-gpu lists it."""
    from components.vision import runtimes

    assert runtimes.onnx_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert runtimes.onnx_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert runtimes.onnx_providers() == ["CPUExecutionProvider"]  # this machine, for real


def test_the_gpu_image_carries_onnxruntime_gpu():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pins = (root / "docker" / "constraints-gpu.txt").read_text().splitlines()
    assert any(line.startswith("onnxruntime-gpu==") for line in pins)
    dockerfile = (root / "docker" / "Dockerfile").read_text()
    assert "s/^onnxruntime==.*/onnxruntime-gpu/" in dockerfile


def test_int8_onnx_is_static_qdq_and_carries_the_labels(exported):
    import onnx

    from components.vision.inference import load_labels

    model = onnx.load(str(exported / "model_int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: readable by any runtime
    assert load_labels(exported / "model_int8.onnx") == [str(d) for d in range(10)]
    assert (exported / "model_int8.onnx").stat().st_size < (exported / "model.onnx").stat().st_size


def test_onnx_int8_needs_onnx():
    from components.infra.errors import UserError

    with pytest.raises(UserError, match="onnx_int8 is quantized from the onnx file"):
        ExportConfig.from_dict({"formats": ["tflite", "onnx_int8"]})
