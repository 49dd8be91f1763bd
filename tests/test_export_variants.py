"""A quantized format that fails parity is dropped from the export with one line, its
numbers kept, and the verified float formats are published; export.on_variant_failure:
fail ends the stage in one line instead. Real exports of the session's trained model
(nothing mocked): the int8 files are calibrated on ONE train image and allowed to lose
nothing (max_quantized_accuracy_drop 0, so one test image of 270 at most), which makes
them lose 2 of the 270 test images here."""

import json

import pytest

from pipelines.cli import main

pytestmark = pytest.mark.slow

FORMATS = ["tflite", "tflite_int8", "onnx", "onnx_int8"]
STRICT = ["--set", f"formats=[{','.join(FORMATS)}]", "--set", "benchmark_runs=2",
          "--set", "representative_images=1", "--set", "max_quantized_accuracy_drop=0"]  # fmt: skip


def export(digits_dataset, trained_model, out, *extra):
    return main(["export", "--dataset", str(digits_dataset), "--model", str(trained_model),
                 "--output", str(out), *STRICT, *extra])  # fmt: skip


def test_a_failing_int8_file_is_dropped_and_the_float_files_are_published(
    tmp_path, digits_dataset, trained_model, capsys
):
    from components.push.config import PushConfig
    from components.push.core import run as push

    out = tmp_path / "export"
    code = export(digits_dataset, trained_model, out)
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if "dropped from this export" in line]
    assert len(lines) == 1, captured.err[-3000:]
    parity = json.loads((out / "parity.json").read_text())
    dropped = {name for name, r in parity.items() if r.get("dropped")}
    assert dropped and dropped <= {"tflite_int8", "onnx_int8"}  # the premise: one failed
    files = {"tflite_int8": "model_int8.tflite", "onnx_int8": "model_int8.onnx"}
    card = (out / "model_card.md").read_text()
    for name in dropped:
        result = parity[name]
        # the evidence: the numbers stay, the reason is written, the file is gone
        assert result["passed"] is False and result["accuracy_drop"] > result["max_accuracy_drop"]
        assert result["dropped"].startswith(f"{name} loses") and name in lines[0]
        assert not (out / files[name]).exists() and f"`{files[name]}` ({name})" in card
        assert name not in json.loads((out / "benchmark.json").read_text())
    for name in {"tflite", "onnx"} | ({"tflite_int8", "onnx_int8"} - dropped):
        assert parity[name]["passed"]
    assert (out / "model.tflite").is_file() and (out / "model.onnx").is_file()

    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": True, "reasons": []}))
    registry = tmp_path / "registry"
    published = push(PushConfig(registry=str(registry), version="v1", serving="auto"), out,
                     evaluation)  # fmt: skip
    version = registry / "visionpipe-classifier" / "v1"
    assert published["pushed"] and (version / "model.onnx").is_file()
    assert not any((version / files[name]).exists() for name in dropped)
    assert json.loads((version / "parity.json").read_text())[next(iter(dropped))]["dropped"]


def test_on_variant_failure_fail_ends_the_export_in_one_line(
    tmp_path, digits_dataset, trained_model, capsys
):
    out = tmp_path / "export"
    code = export(digits_dataset, trained_model, out, "--set", "on_variant_failure=fail")
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in err
    assert last.startswith("visionpipe: failed: exported model does not match Keras")
    assert "int8 loses" in last and "export.on_variant_failure=drop" in last
    kept = tmp_path / "export.failed"
    parity = json.loads((kept / "parity.json").read_text())
    assert any(r.get("passed") is False for r in parity.values()) and not out.exists()
