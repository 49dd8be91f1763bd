"""The fastest verified file for each deployment target, from an export's own
measurements (benchmark.json, parity.json): what the model card recommends and what
`push.serving: auto` serves. Nothing is recommended that failed parity (or was dropped
from the export for it)."""

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


QUANTIZED = ("onnx_int8", "openvino_int8")
# `auto` serves a quantized file only when it is this much faster than the fastest float
# one at least, as well as beyond both measurements' spread: an int8 file trades some
# accuracy (up to export.max_quantized_accuracy_drop) for speed, so a gain inside the
# noise, or of a few percent, is not worth it
MIN_QUANTIZED_GAIN = 0.10


def spread_ms(measured: dict[str, Any]) -> float:
    """The interquartile range of a format's batch-1 latency samples (benchmark.json p25_ms,
    p75_ms); an older benchmark without them: p90 - median, a wider stand-in."""
    if "p25_ms" in measured and "p75_ms" in measured:
        return float(measured["p75_ms"]) - float(measured["p25_ms"])
    return max(0.0, float(measured.get("p90_ms", measured["median_ms"])) - measured["median_ms"])


def quantized_wins(float_ms: dict[str, Any], int8_ms: dict[str, Any]) -> tuple[bool, str]:
    """Whether the quantized file is faster beyond the measured spread: its median beats
    the float one's by more than both interquartile ranges together and by at least
    MIN_QUANTIZED_GAIN of the float median. (decision, the numbers that made it)."""
    gain = float_ms["median_ms"] - int8_ms["median_ms"]
    noise = spread_ms(float_ms) + spread_ms(int8_ms)
    needed = max(noise, MIN_QUANTIZED_GAIN * float_ms["median_ms"])
    shown = (
        f"{int8_ms['median_ms']:.3f} ms against {float_ms['median_ms']:.3f} ms: {gain:+.3f} ms, "
        f"needs more than {needed:.3f} ms (the two interquartile ranges {noise:.3f} ms, or "
        f"{MIN_QUANTIZED_GAIN:.0%} of the float median)"
    )
    return gain > needed, shown


def auto_serving(benchmark: dict[str, Any], parity: dict[str, Any]) -> tuple[str, bool, str]:
    """(push.serving, push.serving_int8, why) for `push.serving: auto`: the fastest verified
    unquantized server file, unless the fastest verified quantized one is faster beyond the
    measured spread (quantized_wins)."""
    measured = [n for n in TARGETS["server CPU"] if n in benchmark and verified(parity, n)]
    floats = {n: benchmark[n] for n in measured if n not in QUANTIZED}
    int8 = {n: benchmark[n] for n in measured if n in QUANTIZED}
    if not floats and not int8:
        return "none", False, "no verified server format was measured"
    best_float = min(floats, key=lambda n: floats[n]["median_ms"]) if floats else None
    best_int8 = min(int8, key=lambda n: int8[n]["median_ms"]) if int8 else None
    if best_float is None:
        chosen, why = best_int8, "no verified unquantized server file was measured"
    elif best_int8 is None:
        chosen, why = best_float, "no verified quantized server file was measured"
    else:
        wins, numbers = quantized_wins(floats[best_float], int8[best_int8])
        chosen = best_int8 if wins else best_float
        verdict = "is" if wins else "is not"
        why = (
            f"{FILES[best_int8]} {verdict} faster than {FILES[best_float]} beyond the "
            f"measured spread ({numbers})"
        )
    runtime, quantized = SERVING[chosen]
    keras = benchmark.get("keras", {}).get("median_ms")
    ms = benchmark[chosen]["median_ms"]
    ratio = f", {keras / ms:.2f}x Keras" if keras and ms else ""
    why = f"{FILES[chosen]} ({ms:.3f} ms{ratio}, batch 1 on the export machine): {why}"
    return runtime, quantized, why
