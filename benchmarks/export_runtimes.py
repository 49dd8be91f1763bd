"""Every CPU runtime an export ships for, on the same backbone, in one process.

    .venv/bin/python benchmarks/export_runtimes.py
        [--models MobileNetV3Small,EfficientNetB0,ResNet50] [--size 224] [--runs 100]
        [--calibration 64] [--tflite]

Each backbone is built as training builds it (random weights: `weights: none`; speed
does not depend on the weight values) and written with the export stage's own
functions: `convert.write_onnx` (with the transpose fix; the Transpose count is
printed), `write_onnx_int8` (static QDQ), `write_openvino` (fp32 IR) and both int8
IRs (`write_openvino_int8_nncf`, `write_openvino_int8_qdq`), calibrated on
`--calibration` real digits upscaled to S. With `--tflite`, LiteRT fp32 and int8 too
(TFLite conversion of ResNet50 takes minutes). Latency: the median of `--runs` batch-1
calls after warm-up, formats measured alternately so machine noise hits all alike;
throughput: the best of 3 batch-32 calls. Every runtime at its default thread count
(all the CPUs this process may use; printed). Prints one JSON line per model, with
the CPU's flags (AVX2, AVX-512, VNNI, AMX), then the goals of issue 24 as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.onnx_int8 import calibration_images, median_ms  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> dict[str, bool]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    present = set(line.split(":", 1)[-1].split())
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "?"
    )
    return {"model": model, **{flag: flag in present for flag in FLAGS}}


def write_all(model, size: int, folder: Path, images: np.ndarray, tflite: bool) -> dict:
    """The export stage's files for `model`; name -> (runtime kind, path)."""
    import onnx

    from components.export import convert

    def representative():
        return (images[i : i + 1] for i in range(len(images)))

    classes = [str(i) for i in range(model.outputs[0].shape[-1])]
    files = {"onnx": folder / "model.onnx", "onnx_int8": folder / "model_int8.onnx"}
    convert.write_onnx(model, size, files["onnx"], 17, classes)
    convert.write_onnx_int8(files["onnx"], files["onnx_int8"], representative)
    files["openvino"] = folder / "model.xml"
    convert.write_openvino(files["onnx"], files["openvino"], classes, size)
    files["openvino_int8_nncf"] = folder / "nncf.xml"
    convert.write_openvino_int8_nncf(
        files["openvino"], files["openvino_int8_nncf"], representative, classes, size
    )
    files["openvino_int8_qdq"] = folder / "qdq.xml"
    convert.write_openvino_int8_qdq(files["onnx_int8"], files["openvino_int8_qdq"], classes, size)
    if tflite:
        files["tflite"] = folder / "model.tflite"
        convert.write_tflite(model, size, files["tflite"], "float32", None)
        files["tflite_int8"] = folder / "model_int8.tflite"
        convert.write_tflite(model, size, files["tflite_int8"], "int8", representative)
    transposes = convert.transpose_count(onnx.load(str(files["onnx"])))
    return {"files": files, "transposes": transposes}


NAMES = {  # file -> the name it is measured under
    "onnx": "ort_fp32",
    "onnx_int8": "ort_int8",
    "openvino": "ov_fp32",
    "openvino_int8_nncf": "ov_int8_nncf",
    "openvino_int8_qdq": "ov_int8_qdq",
    "tflite": "tflite",
    "tflite_int8": "tflite_int8",
}


def default_precision(path: Path):
    """The fp32 IR as OpenVINO runs it without a precision hint: in bfloat16 on CPUs with
    bf16 units (AVX512_BF16, AMX), so not the verified float function (export runs f32)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    name = compiled.inputs[0].get_any_name()

    def predict(images, metadata=None):
        return np.asarray(request.infer({name: images})[compiled.outputs[0]]).copy()

    predict.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return predict


def predictors_for(model, files: dict) -> dict:
    from components.vision import runtimes

    found = {"keras": runtimes.keras_predictor(model)}
    found["ov_fp32_cpu_default"] = default_precision(files["openvino"])
    for name, path in files.items():
        if name.startswith("onnx"):
            found[NAMES[name]] = runtimes.onnx_predictor(path)
        elif name.startswith("openvino"):
            found[NAMES[name]] = runtimes.openvino_predictor(str(path))
        else:
            found[NAMES[name]] = runtimes.tflite_predictor(path)
    return found


def measure(name: str, args, folder: Path) -> dict:
    from components.export.verify import throughput
    from components.infra.resources import cpu_limit
    from components.train.models import build_model

    model = build_model(name, args.size, 10, 0.2, "none")
    images = calibration_images(args.calibration, args.size)
    written = write_all(model, args.size, folder, images, args.tflite)
    predictors = predictors_for(model, written["files"])
    batch1 = {k: round(v, 3) for k, v in median_ms(predictors, images[:1], args.runs).items()}
    batch32 = {
        key: throughput(predict, images[:32])
        for key, predict in predictors.items()
        if not key.startswith("tflite")
    }
    reference = predictors["keras"](images[:32]).argmax(1)
    agreement = {
        key: float((predict(images[:32]).argmax(1) == reference).mean())
        for key, predict in predictors.items()
        if not key.startswith("tflite")
    }
    keras = batch1["keras"]
    # the verified files only: not OpenVINO's default-precision run of the fp32 IR
    fastest = min((k for k in batch1 if k not in ("keras", "ov_fp32_cpu_default")), key=batch1.get)
    int8 = min(batch1["ov_int8_nncf"], batch1["ov_int8_qdq"], batch1["ort_int8"])
    return {
        "model": name,
        "size": args.size,
        "threads": cpu_limit(),
        "onnx_transposes": written["transposes"],
        "ov_cpu_default_precision": predictors["ov_fp32_cpu_default"].precision,
        "batch1_median_ms": batch1,
        "batch32_images_per_s": batch32,
        "top1_agreement_with_keras_32_images": agreement,
        "fastest": fastest,
        "goal_fastest_vs_keras": round(keras / batch1[fastest], 2),
        "goal_int8_vs_ort_fp32": round(batch1["ort_fp32"] / int8, 2),
        "goal_ov_fp32_vs_ort_fp32": round(batch1["ov_fp32"] / batch1["ort_fp32"], 2),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="MobileNetV3Small,EfficientNetB0,ResNet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--tflite", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps({"cpu": cpu_flags()}), flush=True)
    results = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="export-runtimes-") as tmp:
            result = measure(name, args, Path(tmp))
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
