"""Static int8 ONNX (QDQ, per channel) against fp32 ONNX, batch-1 latency, same process.

    .venv/bin/python benchmarks/onnx_int8.py [--models ResNet50,EfficientNetB0,MobileNetV3Small]
        [--size 224] [--runs 100] [--calibration 64]

Each backbone is built as training builds it (random weights: `weights: none`;
speed does not depend on the weight values), exported with the export stage's
own `convert.write_onnx` and quantized with its `convert.write_onnx_int8`,
calibrated on `--calibration` images (the real digits, upscaled to S, so the
activations have an image's statistics). Latency: the median of `--runs`
batch-1 calls after warm-up, both files on ONNX Runtime's CPU provider with the
same thread count, measured alternately so machine noise hits both alike.
Prints one JSON line per model (fp32 ms, int8 ms, speed-up, sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def calibration_images(count: int, size: int) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for pixels in digits.images[:count]:
        gray = Image.fromarray(np.rint(pixels * 255 / 16).astype(np.uint8), "L")
        out.append(np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR).convert("RGB")))
    return np.stack(out).astype(np.float32)


def median_ms(predictors: dict, image: np.ndarray, runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in predictors}
    for predict in predictors.values():
        for _ in range(5):
            predict(image)
    for _ in range(runs):
        for name, predict in predictors.items():  # alternate: noise hits both alike
            start = time.perf_counter()
            predict(image)
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.median(values)) for name, values in samples.items()}


def measure(name: str, size: int, runs: int, calibration: int, folder: Path) -> dict:
    from components.export import convert
    from components.train.models import build_model
    from components.vision import runtimes

    model = build_model(name, size, 10, 0.2, "none", 16, 0.99, 0)
    fp32, int8 = folder / f"{name}.onnx", folder / f"{name}_int8.onnx"
    convert.write_onnx(model, size, fp32, 17, [str(i) for i in range(10)])
    images = calibration_images(calibration, size)
    started = time.time()
    convert.write_onnx_int8(fp32, int8, lambda: (images[i : i + 1] for i in range(len(images))))
    quantize_s = time.time() - started
    threads = os.cpu_count()
    predictors = {
        "fp32": runtimes.onnx_predictor(fp32, threads=threads),
        "int8": runtimes.onnx_predictor(int8, threads=threads),
    }
    sample = images[:8]
    agree = (predictors["fp32"](sample).argmax(1) == predictors["int8"](sample).argmax(1)).mean()
    ms = median_ms(predictors, images[:1], runs)
    return {
        "model": name,
        "size": size,
        "fp32_ms": round(ms["fp32"], 3),
        "int8_ms": round(ms["int8"], 3),
        "speedup": round(ms["fp32"] / ms["int8"], 3),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": int8.stat().st_size,
        "top1_agreement_on_8": float(agree),
        "quantize_s": round(quantize_s, 1),
        "threads": threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="ResNet50,EfficientNetB0,MobileNetV3Small")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--calibration", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(json.dumps(measure(name, args.size, args.runs, args.calibration, Path(tmp))))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
