"""The export stage: write every format, verify each against Keras on the test split."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from components.common import progress
from components.common.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.export import convert, runtimes
from components.export.config import ExportConfig
from components.export.verify import latency, parity

STAGE = "export"
FILES = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(
    config: ExportConfig, dataset: str | Path, model_dir: str | Path, output: str | Path
) -> dict[str, Any]:
    """Export the model in `model_dir`; fail if a float format disagrees with Keras."""
    from components.common.records import load_split_arrays
    from components.evaluate.core import load_model

    record = StageRecord(STAGE, config, {"dataset": str(dataset), "model": str(model_dir)})
    classes = read_json(Path(dataset) / "classes.json")
    size = int(read_json(Path(dataset) / "stats.json")["image_size"])
    model = load_model(model_dir)
    images, labels, _ = load_split_arrays(dataset, "test", size)

    with atomic_dir(output) as work:
        (work / "labels.txt").write_text("".join(f"{name}\n" for name in classes))
        predictors: dict[str, runtimes.Predictor] = {"keras": runtimes.keras_predictor(model)}
        saved_model = work / FILES["saved_model"]
        with progress.step(STAGE, "SavedModel"):
            convert.write_saved_model(model, size, saved_model)
        if "tflite" in config.formats:
            with progress.step(STAGE, "TFLite (float32, builtin ops)"):
                convert.write_tflite(saved_model, work / FILES["tflite"])
            predictors["tflite"] = runtimes.tflite_predictor(work / FILES["tflite"])
        if "onnx" in config.formats:
            with progress.step(STAGE, f"ONNX (opset {config.onnx_opset})"):
                convert.write_onnx(model, size, work / FILES["onnx"], config.onnx_opset, classes)
            predictors["onnx"] = runtimes.onnx_predictor(work / FILES["onnx"])

        with progress.step(STAGE, f"verifying every format on {len(labels)} test images"):
            reference = runtimes.predict_all(predictors["keras"], images, config.batch_size)
            report: dict[str, Any] = {
                "keras": {
                    "accuracy": float((reference.argmax(1) == labels).mean()),
                    "count": int(len(labels)),
                }
            }
            for name, predictor in predictors.items():
                if name != "keras":
                    candidate = runtimes.predict_all(predictor, images, config.batch_size)
                    report[name] = parity(reference, candidate, labels)
                    report[name]["min_top1_agreement"] = config.min_float_agreement
                    report[name]["passed"] = (
                        report[name]["top1_agreement"] >= config.min_float_agreement
                    )
        write_json(work / "parity.json", report)

        with progress.step(STAGE, "benchmarking batch-1 latency"):
            benchmark = (
                {
                    name: {
                        **latency(predictor, images[0], config.benchmark_runs),
                        "size_bytes": folder_size(work / FILES[name])
                        if name in FILES
                        else folder_size(Path(model_dir) / "model.keras"),
                    }
                    for name, predictor in predictors.items()
                }
                if len(images)
                else {}
            )
        write_json(work / "benchmark.json", benchmark)
        write_model_card(work, dataset, model_dir, report, benchmark, classes, size)
        if "saved_model" not in config.formats:
            shutil.rmtree(saved_model)
        failed = [n for n, r in report.items() if n != "keras" and not r["passed"]]
        if failed:
            details = ", ".join(f"{n} {report[n]['top1_agreement']:.4f}" for n in failed)
            raise convert.ExportFailed(
                f"exported model disagrees with Keras on the test split: {details} "
                f"< min_float_agreement {config.min_float_agreement}; see parity.json"
            )
        record.write(work, image_size=size, classes=classes)
    summary = ", ".join(f"{n} {r['top1_agreement']:.4f}" for n, r in report.items() if n != "keras")
    progress.log(STAGE, f"top-1 agreement with Keras: {summary} -> {output}")
    return {"parity": report, "benchmark": benchmark}


def write_model_card(folder: Path, dataset, model_dir, report, benchmark, classes, size) -> None:
    from components.common.html import table_md

    stats = read_json(Path(dataset) / "stats.json")
    train_record = read_json(Path(model_dir) / "config.json")
    val = read_json(Path(model_dir) / "metrics.json")
    parity_rows = [
        [name, r.get("top1_agreement", "reference"), r.get("max_abs_diff", ""), r["accuracy"]]
        for name, r in report.items()
    ]
    latency_rows = [
        [name, b["median_ms"], b["p90_ms"], b["size_bytes"]] for name, b in benchmark.items()
    ]
    lines = [
        f"# Model card: {train_record['config']['model']} on {stats['source']}",
        "",
        "## Data",
        f"{stats['counts']['total']} images in {len(classes)} classes "
        f"({', '.join(classes)}); splits {stats['counts']['per_split']}; "
        f"{stats['counts']['rejected']} files rejected in preparation.",
        "",
        "## Input and output",
        f"Input `image`: float32 (batch, {size}, {size}, 3), RGB values 0..255, images resized "
        f"to {size}x{size} (bilinear) as in preparation. Output: float32 (batch, {len(classes)}) "
        "class probabilities in the order of `labels.txt`.",
        "",
        "## Training",
        "```",
        *(f"{k}: {v}" for k, v in train_record["config"].items()),
        "```",
        f"Validation accuracy of the kept epoch: {val.get('val_accuracy')}.",
        "",
        "## Export parity on the test split",
        table_md(["format", "top-1 agreement", "max abs diff", "accuracy"], parity_rows),
        "",
        "## Batch-1 latency on the export machine (CPU)",
        table_md(["format", "median ms", "p90 ms", "size bytes"], latency_rows),
        "",
        "## Intended use and limits",
        "Classifies images like those of the training source into the listed classes. It has "
        "no 'none of these' class: an image from elsewhere is still given one of them. Accuracy "
        "holds only for images from the same distribution as the training data.",
    ]
    (folder / "model_card.md").write_text("\n".join(lines) + "\n")
