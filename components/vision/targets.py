"""The fastest verified file for each deployment target, from an export's own
measurements (benchmark.json, parity.json): what the model card recommends and what
`push.serving: auto` serves. Nothing is recommended that failed parity."""

from __future__ import annotations

from typing import Any

CUDA = "CUDAExecutionProvider"
# target -> the formats that can serve it
TARGETS = {
    "server CPU": ("saved_model", "onnx", "onnx_int8", "openvino", "openvino_int8"),
    "GPU (ONNX Runtime CUDA)": ("onnx", "onnx_int8"),
    "phone (LiteRT)": ("tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8"),
}
FILES = {
    "saved_model": "saved_model/",
    "onnx": "model.onnx",
    "onnx_int8": "model_int8.onnx",
    "openvino": "model.xml",
    "openvino_int8": "model_int8.xml",
    "tflite": "model.tflite",
    "tflite_fp16": "model_fp16.tflite",
    "tflite_dynamic": "model_dynamic_int8.tflite",
    "tflite_int8": "model_int8.tflite",
}
# a server format -> (push.serving, push.serving_int8)
SERVING = {
    "onnx": ("triton", False),
    "onnx_int8": ("triton", True),
    "openvino": ("openvino", False),
    "openvino_int8": ("openvino", True),
    "saved_model": ("tensorflow", False),
}


def verified(parity: dict[str, Any], name: str) -> bool:
    return bool(parity.get(name, {}).get("passed"))


def fastest(
    benchmark: dict[str, Any], parity: dict[str, Any], target: str
) -> dict[str, Any] | None:
    """{"format", "file", "median_ms", "ratio_to_keras"} of the fastest verified format for
    `target` at batch 1 on the export machine; None when none was measured there (a GPU
    target on an export that ran without CUDA)."""
    candidates = [
        name
        for name in TARGETS[target]
        if name in benchmark and verified(parity, name)
        and (target != "GPU (ONNX Runtime CUDA)" or benchmark[name].get("runtime") == CUDA)
    ]  # fmt: skip
    if not candidates:
        return None
    best = min(candidates, key=lambda name: benchmark[name]["median_ms"])
    keras = benchmark.get("keras", {}).get("median_ms")
    ms = benchmark[best]["median_ms"]
    return {
        "format": best,
        "file": FILES[best],
        "median_ms": ms,
        "ratio_to_keras": round(keras / ms, 2) if keras and ms else None,
        "runtime": benchmark[best].get("runtime"),
    }


def auto_serving(benchmark: dict[str, Any], parity: dict[str, Any]) -> tuple[str, bool, str]:
    """(push.serving, push.serving_int8, why) for `push.serving: auto`."""
    best = fastest(benchmark, parity, "server CPU")
    if best is None:
        return "none", False, "no verified server format was measured"
    runtime, int8 = SERVING[best["format"]]
    why = f"{best['file']} is the fastest verified server file ({best['median_ms']:.3f} ms"
    if best["ratio_to_keras"]:
        why += f", {best['ratio_to_keras']:.2f}x Keras"
    return runtime, int8, why + ", batch 1 on the export machine)"
