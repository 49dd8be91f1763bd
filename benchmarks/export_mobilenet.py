"""Export proof and latency for a keras.applications backbone (MobileNetV3Small, weights none).

    .venv/bin/python -m benchmarks.export_mobilenet [--epochs 6] [--runs 50] [--output DIR]

Part 1, parity: prepares builtin:digits at 32x32, trains MobileNetV3Small with
`weights: none` through the real train stage, and runs the real export stage
(every format verified on the whole test split); prints parity.json.
Part 2, latency at 224x224: builds MobileNetV3Small (weights none) with our
head, exports SavedModel / TFLite fp32 / TFLite full-int8 / ONNX, and times
batch-1 inference of Keras, ONNX Runtime, LiteRT fp32 and LiteRT int8 in this
one process, with ratios to Keras. Record both in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np


def parity_on_digits(workdir: Path, epochs: int) -> dict:
    from components.export.config import ExportConfig
    from components.export.core import run as export
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.train.config import TrainConfig
    from components.train.core import run as train

    prepare(PrepareConfig(), "builtin:digits", workdir / "dataset")
    config = TrainConfig(
        model="MobileNetV3Small",
        weights="none",
        epochs=epochs,
        early_stopping_patience=epochs,
        learning_rate=0.002,
    )
    metrics = train(config, workdir / "dataset", workdir / "model")
    result = export(
        ExportConfig(benchmark_runs=10), workdir / "dataset", workdir / "model", workdir / "export"
    )
    return {"val_accuracy": metrics["val_accuracy"], "parity": result["parity"]}


def latency_at_224(workdir: Path, runs: int) -> dict:
    from components.export import convert
    from components.export.verify import latency
    from components.train.models import build_model
    from components.vision import runtimes

    model = build_model("MobileNetV3Small", 224, 10, 0.2, weights="none")
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (32, 224, 224, 3)).astype(np.float32)
    convert.write_tflite(model, 224, workdir / "fp32.tflite")
    convert.write_tflite(
        model,
        224,
        workdir / "int8.tflite",
        "int8",
        lambda: (calibration[i : i + 1] for i in range(len(calibration))),
    )
    convert.write_onnx(model, 224, workdir / "m224.onnx", 17, [str(i) for i in range(10)])
    predictors = {
        "keras": runtimes.keras_predictor(model),
        "onnxruntime": runtimes.onnx_predictor(workdir / "m224.onnx"),
        "tflite_fp32": runtimes.tflite_predictor(workdir / "fp32.tflite"),
        "tflite_int8": runtimes.tflite_predictor(workdir / "int8.tflite"),
    }
    image = rng.integers(0, 256, (224, 224, 3)).astype(np.float32)
    timings = {name: latency(p, image, runs) for name, p in predictors.items()}
    keras_ms = timings["keras"]["median_ms"]
    for values in timings.values():
        values["speedup_vs_keras"] = round(keras_ms / values["median_ms"], 2)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--output", default=None)
    parser.add_argument("--skip-parity", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    workdir = Path(args.output or tempfile.mkdtemp(prefix="vp-mobilenet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    }
    if not args.skip_parity:
        report["digits_parity"] = parity_on_digits(workdir, args.epochs)
    report["latency_224_batch1"] = latency_at_224(workdir, args.runs)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
