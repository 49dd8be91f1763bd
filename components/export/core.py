"""The export stage: write every format, verify each against Keras on the test split."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from components.common import metadata, progress, runtimes
from components.common.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.export import convert, tflite_metadata
from components.export.config import ExportConfig
from components.export.model_card import write_model_card
from components.export.verify import latency, parity, throughput

STAGE = "export"
FILES = {
    "saved_model": "saved_model",
    "onnx": "model.onnx",
    "onnx_int8": "model_int8.onnx",
    **{name: file for name, (file, _) in convert.TFLITE_VARIANTS.items()},
}


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def representative_batches(dataset: Path, size: int, count: int, encoder=None, seed: int = 0):
    """A callable yielding float32 (1, S, S, 3) train images for int8 calibration
    ({"image", "metadata" (1, M)} with a metadata encoder)."""
    from components.common.records import load_split_arrays, stratified_sample

    keep, _ = stratified_sample(dataset, "train", count, seed)  # only these are kept in memory
    images, _, uris = load_split_arrays(dataset, "train", size, keep=keep)
    picks = np.random.default_rng(seed).permutation(len(images))[:count]
    if encoder is None:
        return lambda: (images[i : i + 1].astype(np.float32) for i in picks)
    _, rows = metadata.split_matrix(encoder, dataset, "train", uris)
    return lambda: (
        {"image": images[i : i + 1].astype(np.float32), "metadata": rows[i : i + 1]} for i in picks
    )


def calibration_temperature(evaluation: str | Path | None) -> float:
    """The temperature evaluate fitted on val (1.0 without an evaluation or calibration)."""
    if evaluation is None or not (Path(evaluation) / "calibration.json").exists():
        return 1.0
    temperature = float(read_json(Path(evaluation) / "calibration.json")["temperature"])
    if temperature != 1.0:
        progress.log(
            STAGE, f"baking temperature {temperature:.3f} (evaluate, on val) into each format"
        )
    return temperature


def tflite_description(
    dataset: Path, model_dir: Path, classes: list[str], size: int, encoder: dict | None
) -> tflite_metadata.Description:
    """What the .tflite files say about themselves in their standard metadata."""
    import components

    trained = read_json(model_dir / "config.json") if (model_dir / "config.json").exists() else {}
    backbone = trained.get("config", {}).get("model", "model")
    source = read_json(dataset / "stats.json").get("source", "")
    shown = ", ".join(classes[:10]) + (
        f" and {len(classes) - 10} more" if len(classes) > 10 else ""
    )
    return tflite_metadata.Description(
        name=f"{backbone} image classifier",
        description=(
            f"Classifies an RGB image into one of {len(classes)} classes ({shown}). "
            f"Trained by visionpipe on {source} at {size}x{size}."
        ),
        version=trained.get("started", "unversioned"),
        author=f"visionpipe {components.__version__}",
        classes=classes,
        image_size=size,
        encoder=encoder,
    )


def check(name: str, result: dict[str, Any], keras_accuracy: float, config: ExportConfig) -> None:
    """Mark a format passed or failed: agreement for float formats, accuracy for integer ones."""
    if name in convert.QUANTIZED_FORMATS:
        drop = keras_accuracy - result["accuracy"]
        result["accuracy_drop"] = round(drop, 6)
        # a test split too small to express the margin (18 images: one is 5.6 points)
        # still allows one image, or no small dataset could ever ship a quantized file
        allowed = max(config.max_quantized_accuracy_drop, 1.0 / max(1, result["count"]))
        result["max_accuracy_drop"] = round(allowed, 6)
        result["passed"] = drop <= allowed + 1e-9
    else:
        result["min_top1_agreement"] = config.min_float_agreement
        result["passed"] = result["top1_agreement"] >= config.min_float_agreement


def keep_evidence(work: Path, failed: list[str], target: str) -> str:
    """Copy parity.json, the reports and the files of the failing formats to `target` (a
    folder or gs:// prefix beside the output), where a failed run's message points."""
    from components.common import storage

    keep = ["parity.json", "benchmark.json", "model_card.md", "labels.txt"]
    keep += [FILES[name] for name in failed if name in FILES]
    storage.delete_tree(target)
    for name in keep:
        path = work / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            storage.copy_file(file, f"{target.rstrip('/')}/{file.relative_to(work).as_posix()}")
    return target


def run(
    config: ExportConfig,
    dataset: str | Path,
    model_dir: str | Path,
    output: str | Path,
    evaluation: str | Path | None = None,
    evidence_uri: str | None = None,
) -> dict[str, Any]:
    """Export the model in `model_dir`; fail if any format does not match Keras.

    evaluation: the evaluate stage's folder, for the model card's test metrics.
    evidence_uri: where a failed verification keeps parity.json and the failing files
        (default: `<output>.failed` beside the output).
    """
    from components.common.models import load_model, metadata_rows

    dataset, model_dir = Path(dataset), Path(model_dir)
    record = StageRecord(STAGE, config, {"dataset": str(dataset), "model": str(model_dir)})
    classes = read_json(dataset / "classes.json")
    size = int(read_json(dataset / "stats.json")["image_size"])
    temperature = calibration_temperature(evaluation)
    model = convert.with_temperature(convert.inference_model(load_model(model_dir)), temperature)
    from components.common.records import streamed_split

    # streamed from the shards: parity never holds the split's images
    images, labels, uris = streamed_split(dataset, "test", size)
    encoder, rows = metadata_rows(model, model_dir, dataset, {"test": uris})
    rows = rows["test"]
    spec = encoder.to_dict() if encoder else None

    with atomic_dir(output) as work:
        (work / "labels.txt").write_text("".join(f"{name}\n" for name in classes))
        if encoder:  # how to build the metadata input, beside every format
            encoder.save(work)
        predictors: dict[str, runtimes.Predictor] = {"keras": runtimes.keras_predictor(model)}
        providers = {"keras": "tensorflow", "saved_model": "tensorflow"}  # what ran each format
        providers.update({name: "litert" for name in convert.TFLITE_VARIANTS})
        saved_model = work / FILES["saved_model"]
        with progress.step(STAGE, "SavedModel"):
            convert.write_saved_model(model, size, saved_model)
        if "saved_model" in config.formats:  # verified like every other format
            predictors["saved_model"] = runtimes.saved_model_predictor(saved_model)
        for name, (file, quantization) in convert.TFLITE_VARIANTS.items():
            if name not in config.formats:
                continue
            representative = None
            if quantization == "int8":
                representative = representative_batches(
                    dataset, size, config.representative_images, encoder
                )
            with progress.step(STAGE, f"TFLite {quantization} (builtin ops, with metadata)"):
                convert.write_tflite(model, size, work / file, quantization, representative)
                tflite_metadata.populate(
                    work / file, tflite_description(dataset, model_dir, classes, size, spec)
                )
            predictors[name] = runtimes.tflite_predictor(work / file)
        if "onnx" in config.formats:
            with progress.step(STAGE, f"ONNX (opset {config.onnx_opset})"):
                convert.write_onnx(
                    model, size, work / FILES["onnx"], config.onnx_opset, classes, spec
                )
        if "onnx_int8" in config.formats:
            with progress.step(STAGE, "ONNX int8 (static QDQ, per channel)"):
                convert.write_onnx_int8(
                    work / FILES["onnx"],
                    work / FILES["onnx_int8"],
                    representative_batches(dataset, size, config.representative_images, encoder),
                )
        for name in ("onnx", "onnx_int8"):
            if name in config.formats:
                session = runtimes.onnx_session(work / FILES[name])
                providers[name] = runtimes.onnx_provider(session)
                predictors[name] = runtimes.onnx_predictor(work / FILES[name], session=session)

        with progress.step(STAGE, f"verifying every format on {len(labels)} test images"):
            reference = runtimes.predict_all(predictors["keras"], images, config.batch_size, rows)
            keras_accuracy = float((reference.argmax(1) == labels).mean()) if len(labels) else 0
            report: dict[str, Any] = {"keras": {"accuracy": keras_accuracy, "count": len(labels)}}
            for name, predictor in predictors.items():
                if name != "keras":
                    candidate = runtimes.predict_all(predictor, images, config.batch_size, rows)
                    report[name] = parity(reference, candidate, labels)
                    check(name, report[name], keras_accuracy, config)
        write_json(work / "parity.json", report)

        with progress.step(STAGE, "benchmarking latency and throughput"):
            benchmark: dict[str, Any] = {}
            for name, predictor in predictors.items() if len(images) else ():
                path = work / FILES[name] if name in FILES else model_dir / "model.keras"
                benchmark[name] = {
                    **latency(
                        predictor,
                        images[0],
                        config.benchmark_runs,
                        None if rows is None else rows[0],
                    ),
                    "batch32_images_per_s": throughput(
                        predictor, images[:32], rows=None if rows is None else rows[:32]
                    ),
                    "size_bytes": folder_size(path),
                    "runtime": providers.get(name, "unknown"),
                }
        write_json(work / "benchmark.json", benchmark)
        write_model_card(
            work, dataset, model_dir, report, benchmark, classes, size, evaluation=evaluation
        )
        if "saved_model" not in config.formats:
            shutil.rmtree(saved_model)
        failed = [n for n, r in report.items() if n != "keras" and not r["passed"]]
        if failed:
            kept = keep_evidence(work, failed, evidence_uri or f"{output}.failed")
            raise convert.ExportFailed(
                "exported model does not match Keras on the test split: "
                + ", ".join(describe_failure(n, report[n]) for n in failed)
                + f"; parity.json and the failing files are kept in {kept}"
            )
        record.write(work, image_size=size, classes=classes, temperature=temperature)
    summary = ", ".join(f"{n} {r['top1_agreement']:.4f}" for n, r in report.items() if n != "keras")
    progress.log(STAGE, f"top-1 agreement with Keras: {summary} -> {output}")
    return {"parity": report, "benchmark": benchmark}


def describe_failure(name: str, result: dict[str, Any]) -> str:
    if "accuracy_drop" in result:
        return (
            f"{name} loses {result['accuracy_drop']:.4f} accuracy "
            f"(> max_quantized_accuracy_drop {result['max_accuracy_drop']})"
        )
    return (
        f"{name} agrees on {result['top1_agreement']:.4f} "
        f"(< min_float_agreement {result['min_top1_agreement']})"
    )
