"""The metadata second input: the same model with and without it, where only metadata helps.

    .venv/bin/python -m benchmarks.metadata_input [--output DIR] [--rows N] [--epochs E]

Writes a manifest of real digits images whose labels (north/south/east) are
drawn independently of the digit, with `sensor` (categorical, the label 90%
of the time), `reading` (numeric, label + N(0, 0.3), every 17th empty) and
`operator` (unrelated, not used). Runs the real stages: prepare, train with
`metadata_columns: [sensor, reading]` and without, evaluate (the image-only
model as the baseline), export (SavedModel, TFLite fp32 and int8, ONNX).
Prints one JSON object; record it in docs/benchmarks.md. tests/test_metadata.py
runs the same function.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("north", "south", "east")


def write_manifest(root: Path, rows: int = 240, seed: int = 0) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    digits = load_digits()
    out = []
    for n in range(rows):
        label = int(rng.integers(len(CLASSES)))  # independent of the digit drawn
        pixels = np.rint(digits.images[n] * 255 / 16).astype(np.uint8)
        image = Image.fromarray(pixels, "L").resize((16, 16), Image.Resampling.NEAREST)
        image.convert("RGB").save(root / "img" / f"{n:04d}.png")
        sensor = f"s{label}" if rng.random() < 0.9 else f"s{rng.integers(len(CLASSES))}"
        reading = "" if n % 17 == 0 else f"{label + rng.normal(0, 0.3):.3f}"
        out.append(
            {
                "uri": f"img/{n:04d}.png",
                "label": CLASSES[label],
                "sensor": sensor,
                "reading": reading,
                "operator": "ann" if n % 2 else "bob",
            }
        )
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return manifest


def run_all(manifest: Path, out: Path, epochs: int = 25) -> dict:
    """prepare -> train (with and without metadata) -> evaluate -> export, timed."""
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate
    from components.export.config import ExportConfig
    from components.export.core import run as export
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.train.config import TrainConfig
    from components.train.core import run as train

    timings = {}
    start = time.perf_counter()
    prepare(PrepareConfig(image_size=16), str(manifest), out / "dataset")
    timings["prepare"] = time.perf_counter() - start
    common = {"epochs": epochs, "width": 8, "early_stopping_patience": epochs}
    start = time.perf_counter()
    with_meta = train(
        TrainConfig(metadata_columns=["sensor", "reading"], **common),
        out / "dataset",
        out / "model",
    )
    timings["train_with_metadata"] = time.perf_counter() - start
    start = time.perf_counter()
    image_only = train(TrainConfig(**common), out / "dataset", out / "image_only")
    timings["train_image_only"] = time.perf_counter() - start
    evaluated = evaluate(
        EvaluateConfig(min_accuracy=0.0, baseline_model=str(out / "image_only")),
        out / "dataset",
        out / "model",
        out / "evaluation",
    )
    exported = export(
        ExportConfig(formats=["saved_model", "tflite", "tflite_int8", "onnx"]),
        out / "dataset",
        out / "model",
        out / "export",
    )
    return {
        "with_meta": with_meta,
        "image_only": image_only,
        "evaluated": evaluated,
        "exported": exported,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }


def summary(result: dict) -> dict:
    metrics = result["evaluated"]["metrics"]
    return {
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "val_accuracy": {
            "with_metadata": result["with_meta"]["val_accuracy"],
            "image_only": result["image_only"]["val_accuracy"],
        },
        "test_accuracy": {
            "with_metadata": metrics["accuracy"],
            "image_only": result["evaluated"]["blessing"]["baseline"]["baseline"]["accuracy"],
        },
        "test_count": result["exported"]["parity"]["keras"]["count"],
        "metadata_features": result["with_meta"]["metadata_features"],
        "parity": {
            name: {"top1_agreement": r["top1_agreement"], "max_abs_diff": r["max_abs_diff"]}
            for name, r in result["exported"]["parity"].items()
            if name != "keras"
        },
        "timings_s": result["timings_s"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output or Path(tmp)
        manifest = write_manifest(out / "data", args.rows)
        result = summary(run_all(manifest, out / "run", args.epochs))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
