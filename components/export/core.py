"""The export stage: write every format, verify each against Keras on the test split."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.export import convert, tflite_metadata
from components.export.config import OPTIONAL, ExportConfig
from components.export.model_card import write_model_card
from components.export.verify import latency, parity, throughput
from components.infra import progress
from components.infra.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.vision import metadata, runtimes

STAGE = "export"
FILES = {
    "saved_model": "saved_model",
    "onnx": "model.onnx",
    "onnx_int8": "model_int8.onnx",
    "openvino": "model.xml",  # + model.bin
    "openvino_int8": "model_int8.xml",
    **{name: file for name, (file, _) in convert.TFLITE_VARIANTS.items()},
}


def folder_size(path: Path) -> int:
    if path.suffix == ".xml":  # an OpenVINO IR: the graph and its weights
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def representative_batches(dataset: Path, size: int, count: int, encoder=None, seed: int = 0):
    """A callable yielding float32 (1, S, S, 3) train images for int8 calibration
    ({"image", "metadata" (1, M)} with a metadata encoder)."""
    from components.vision.records import load_split_arrays, stratified_sample

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
    from components.infra import storage

    keep = ["parity.json", "benchmark.json", "model_card.md", "labels.txt"]
    keep += [FILES[name] for name in failed if name in FILES]
    storage.delete_tree(target)
    for name in keep:
        path = work / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            storage.copy_file(file, f"{target.rstrip('/')}/{file.relative_to(work).as_posix()}")
    return target


@dataclass
class Session:
    """What one export works on: inputs, the inference model, the test split, the files."""

    config: ExportConfig
    dataset: Path
    model_dir: Path
    output: str | Path
    evaluation: str | Path | None
    evidence_uri: str | None
    classes: list[str] = field(default_factory=list)
    size: int = 0
    temperature: float = 1.0
    model: Any = None
    images: Any = None  # the test split, streamed (records.SplitImages)
    labels: Any = None
    rows: Any = None  # the metadata input of a two-input model
    encoder: Any = None
    work: Path = Path()
    predictors: dict[str, runtimes.Predictor] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)  # what ran each format
    choices: dict[str, dict] = field(default_factory=dict)  # e.g. which int8 IR was kept
    threads: int = 1  # CPU threads every runtime that can be told is given

    @property
    def spec(self) -> dict | None:
        return self.encoder.to_dict() if self.encoder else None

    def representative(self):
        return representative_batches(
            self.dataset, self.size, self.config.representative_images, self.encoder
        )


def run(
    config: ExportConfig,
    dataset: str | Path,
    model_dir: str | Path,
    output: str | Path,
    evaluation: str | Path | None = None,
    evidence_uri: str | None = None,
) -> dict[str, Any]:
    """Export the model in `model_dir`; fail if saved_model, tflite or onnx does not match
    Keras. A quantized or optional format that does not is dropped (one line, its numbers
    kept in parity.json and the model card), or fails too with on_variant_failure: fail.

    evaluation: the evaluate stage's folder, for the model card's test metrics.
    evidence_uri: where a failed verification keeps parity.json and the failing files
        (default: `<output>.failed` beside the output).
    """
    session = start_session(config, dataset, model_dir, output, evaluation, evidence_uri)
    record = StageRecord(
        STAGE, config, {"dataset": str(session.dataset), "model": str(session.model_dir)}
    )
    with atomic_dir(output) as work:
        session.work = work
        write_labels(session)
        write_saved_model(session)
        write_tflite_files(session)
        write_onnx_files(session)
        write_openvino_files(session)
        report = verify_formats(session)
        drop_failed_variants(session, report)
        benchmark = benchmark_formats(session)
        write_model_card(
            work,
            session.dataset,
            session.model_dir,
            report,
            benchmark,
            session.classes,
            session.size,
            evaluation=evaluation,
        )
        refuse_failures(session, report)
        record.write(
            work,
            image_size=session.size,
            classes=session.classes,
            temperature=session.temperature,
        )
    summary = ", ".join(
        f"{n} {r['top1_agreement']:.4f}" + (" (dropped)" if r.get("dropped") else "")
        for n, r in report.items()
        if n != "keras"
    )
    progress.log(STAGE, f"top-1 agreement with Keras: {summary} -> {output}")
    return {"parity": report, "benchmark": benchmark}


def start_session(config, dataset, model_dir, output, evaluation, evidence_uri) -> Session:
    """The inference model (augmentation stripped, temperature baked in) and the test split,
    streamed from the shards: parity never holds the split's images."""
    from components.vision.models import load_model, metadata_rows, with_temperature
    from components.vision.records import streamed_split

    session = Session(config, Path(dataset), Path(model_dir), output, evaluation, evidence_uri)
    session.classes = read_json(session.dataset / "classes.json")
    session.size = int(read_json(session.dataset / "stats.json")["image_size"])
    session.temperature = calibration_temperature(evaluation)
    session.model = with_temperature(
        convert.inference_model(load_model(session.model_dir)), session.temperature
    )
    session.images, session.labels, uris = streamed_split(session.dataset, "test", session.size)
    session.encoder, rows = metadata_rows(
        session.model, session.model_dir, session.dataset, {"test": uris}
    )
    session.rows = rows["test"]
    session.predictors = {"keras": runtimes.keras_predictor(session.model)}
    session.threads = cpu_threads()
    session.providers = {"keras": "tensorflow", "saved_model": "tensorflow"}
    session.providers.update({name: "litert" for name in convert.TFLITE_VARIANTS})
    return session


def write_labels(session: Session) -> None:
    (session.work / "labels.txt").write_text("".join(f"{name}\n" for name in session.classes))
    if session.encoder:  # how to build the metadata input, beside every format
        session.encoder.save(session.work)


def write_saved_model(session: Session) -> None:
    """Always written (the TFLite converter reads it); kept and verified when asked for."""
    saved_model = session.work / FILES["saved_model"]
    with progress.step(STAGE, "SavedModel"):
        convert.write_saved_model(session.model, session.size, saved_model)
    if "saved_model" in session.config.formats:  # verified like every other format
        session.predictors["saved_model"] = runtimes.saved_model_predictor(saved_model)


def write_tflite_files(session: Session) -> None:
    for name, (file, quantization) in convert.TFLITE_VARIANTS.items():
        if name not in session.config.formats:
            continue
        representative = session.representative() if quantization == "int8" else None
        with progress.step(STAGE, f"TFLite {quantization} (builtin ops, with metadata)"):
            convert.write_tflite(
                session.model, session.size, session.work / file, quantization, representative
            )
            tflite_metadata.populate(
                session.work / file,
                tflite_description(
                    session.dataset,
                    session.model_dir,
                    session.classes,
                    session.size,
                    session.spec,
                ),
            )
        session.predictors[name] = runtimes.tflite_predictor(session.work / file, session.threads)


def write_onnx_files(session: Session) -> None:
    config, work = session.config, session.work
    if "onnx" in config.formats:
        with progress.step(STAGE, f"ONNX (opset {config.onnx_opset})"):
            convert.write_onnx(
                session.model,
                session.size,
                work / FILES["onnx"],
                config.onnx_opset,
                session.classes,
                session.spec,
            )
    if "onnx_int8" in config.formats:
        with progress.step(STAGE, "ONNX int8 (static QDQ, per channel)"):
            convert.write_onnx_int8(
                work / FILES["onnx"], work / FILES["onnx_int8"], session.representative()
            )
    for name in ("onnx", "onnx_int8"):
        if name in config.formats:
            onnx_session = runtimes.onnx_session(work / FILES[name], session.threads)
            session.providers[name] = runtimes.onnx_provider(onnx_session)
            session.predictors[name] = runtimes.onnx_predictor(
                work / FILES[name], session=onnx_session
            )


def write_openvino_files(session: Session) -> None:
    """The fp32 IR from model.onnx; the int8 IR both ways (NNCF on the fp32 IR, and the QDQ
    ONNX converted), each measured on the test split, the better one kept."""
    import tempfile

    config, work = session.config, session.work
    if "openvino" in config.formats:
        with progress.step(STAGE, "OpenVINO IR fp32 (from model.onnx)"):
            convert.write_openvino(
                work / FILES["onnx"], work / FILES["openvino"], session.classes, session.size
            )
        add_openvino(session, "openvino", work / FILES["openvino"])
    if "openvino_int8" not in config.formats:
        return
    with tempfile.TemporaryDirectory(prefix="openvino-int8-") as tmp:
        candidates = {"nncf": Path(tmp) / "nncf.xml", "onnx_qdq": Path(tmp) / "qdq.xml"}
        with progress.step(STAGE, "OpenVINO IR int8 (NNCF post-training quantization)"):
            convert.write_openvino_int8_nncf(
                work / FILES["openvino"], candidates["nncf"], session.representative(),
                session.classes, session.size,
            )  # fmt: skip
        qdq = work / FILES["onnx_int8"]
        if not qdq.is_file():
            qdq = Path(tmp) / "qdq.onnx"
            convert.write_onnx_int8(work / FILES["onnx"], qdq, session.representative())
        with progress.step(STAGE, "OpenVINO IR int8 (from the QDQ ONNX)"):
            convert.write_openvino_int8_qdq(
                qdq, candidates["onnx_qdq"], session.classes, session.size
            )
        kept = choose_int8(session, candidates)
        for suffix in (".xml", ".bin"):
            shutil.copyfile(
                candidates[kept].with_suffix(suffix),
                (work / FILES["openvino_int8"]).with_suffix(suffix),
            )
    add_openvino(session, "openvino_int8", work / FILES["openvino_int8"])


def add_openvino(session: Session, name: str, path: Path) -> None:
    predictor = runtimes.openvino_predictor(str(path), session.threads)
    session.predictors[name] = predictor
    session.providers[name] = f"openvino CPU {predictor.inference_precision}"


def choose_int8(session: Session, candidates: dict[str, Path]) -> str:
    """The int8 IR to keep, chosen on the val split (the test split stays for verifying the
    kept one): the more accurate; within one val image of each other, the faster at batch
    1. Both measurements go into parity.json."""
    images, labels, rows = val_split(session)
    measured = {}
    for kind, path in candidates.items():
        predictor = runtimes.openvino_predictor(str(path), session.threads)
        probs = runtimes.predict_all(predictor, images, session.config.batch_size, rows)
        accuracy = float((probs.argmax(1) == labels).mean()) if len(labels) else 0.0
        first_row = None if rows is None else rows[0]  # train needs val: never empty here
        timing = latency(predictor, images[0], session.config.benchmark_runs, first_row)
        measured[kind] = {"val_accuracy": round(accuracy, 6), "median_ms": timing["median_ms"]}
    one = 1.0 / max(1, len(labels))
    best = max(m["val_accuracy"] for m in measured.values())
    close = [k for k, m in measured.items() if m["val_accuracy"] >= best - one - 1e-9]
    kept = min(close, key=lambda k: measured[k]["median_ms"])
    session.choices["openvino_int8"] = {
        "kept": kept,
        "chosen_on": f"val ({len(labels)} images)",
        "candidates": measured,
    }
    shown = ", ".join(
        f"{k} val accuracy {m['val_accuracy']:.4f}, {m['median_ms']:.2f} ms"
        for k, m in measured.items()
    )
    progress.log(STAGE, f"OpenVINO int8: kept {kept}, chosen on val ({shown})")
    return kept


def val_split(session: Session):
    """The val split, streamed (images, labels, metadata rows): where variants are chosen."""
    from components.vision.models import metadata_rows
    from components.vision.records import streamed_split

    images, labels, uris = streamed_split(session.dataset, "val", session.size)
    _, rows = metadata_rows(session.model, session.model_dir, session.dataset, {"val": uris})
    return images, labels, rows["val"]


def verify_formats(session: Session) -> dict[str, Any]:
    """Every format against Keras on the whole test split: parity.json."""
    config, labels = session.config, session.labels
    with progress.step(STAGE, f"verifying every format on {len(labels)} test images"):
        reference = runtimes.predict_all(
            session.predictors["keras"], session.images, config.batch_size, session.rows
        )
        keras_accuracy = float((reference.argmax(1) == labels).mean()) if len(labels) else 0
        report: dict[str, Any] = {"keras": {"accuracy": keras_accuracy, "count": len(labels)}}
        for name, predictor in session.predictors.items():
            if name != "keras":
                candidate = runtimes.predict_all(
                    predictor, session.images, config.batch_size, session.rows
                )
                report[name] = parity(reference, candidate, labels)
                check(name, report[name], keras_accuracy, config)
                report[name].update(session.choices.get(name, {}))
                if hasattr(predictor, "inference_precision"):  # OpenVINO: as compiled
                    report[name]["inference_precision"] = predictor.inference_precision
    import onnx

    for name in ("onnx", "onnx_int8"):  # layout changes left in the graph (at most the input's)
        if name in report:
            graph = onnx.load(str(session.work / FILES[name]), load_external_data=False)
            report[name]["transpose_nodes"] = convert.transpose_count(graph)
    write_json(session.work / "parity.json", report)
    return report


def benchmark_formats(session: Session) -> dict[str, Any]:
    """Latency, throughput, size and runtime of every format: benchmark.json."""
    images, rows = session.images, session.rows
    benchmark: dict[str, Any] = {}
    with progress.step(STAGE, "benchmarking latency and throughput"):
        for name, predictor in session.predictors.items() if len(images) else ():
            path = (
                session.work / FILES[name] if name in FILES else session.model_dir / "model.keras"
            )
            benchmark[name] = {
                **latency(
                    predictor,
                    images[0],
                    session.config.benchmark_runs,
                    None if rows is None else rows[0],
                ),
                "batch32_images_per_s": throughput(
                    predictor, images[:32], rows=None if rows is None else rows[:32]
                ),
                "size_bytes": folder_size(path),
                "runtime": session.providers.get(name, "unknown"),
                # as the runtime itself reports them (runtimes.py); None: its own default
                "threads": getattr(predictor, "threads", None),
            }
    write_json(session.work / "benchmark.json", benchmark)
    return benchmark


def cpu_threads() -> int:
    from components.infra.resources import cpu_limit

    return int(cpu_limit())


def drop_failed_variants(session: Session, report: dict[str, Any]) -> None:
    """on_variant_failure: drop: a quantized or optional format that failed verification
    leaves the export (its file, its predictor: never benchmarked, recommended or pushed)
    with one line; parity.json keeps its numbers, marked `dropped` with the reason."""
    if session.config.on_variant_failure != "drop":
        return
    dropped = [n for n in OPTIONAL if n in report and not report[n]["passed"]]
    for name in dropped:
        report[name]["dropped"] = describe_failure(name, report[name])
        path = session.work / FILES[name]
        for file in (path, path.with_suffix(".bin")) if path.suffix == ".xml" else (path,):
            file.unlink(missing_ok=True)
        session.predictors.pop(name, None)
    if dropped:
        write_json(session.work / "parity.json", report)
        progress.log(
            STAGE,
            "dropped from this export: "
            + "; ".join(report[n]["dropped"] for n in dropped)
            + " (numbers kept in parity.json and model_card.md; the verified formats go on; "
            "export.on_variant_failure=fail fails instead)",
        )


def refuse_failures(session: Session, report: dict[str, Any]) -> None:
    """Drop the SavedModel unless asked for; a failed format that was not dropped keeps its
    evidence and ends the stage with one line naming each failure."""
    if "saved_model" not in session.config.formats:
        shutil.rmtree(session.work / FILES["saved_model"])
    failed = [
        n for n, r in report.items() if n != "keras" and not r["passed"] and not r.get("dropped")
    ]
    if failed:
        kept = keep_evidence(
            session.work, failed, session.evidence_uri or f"{session.output}.failed"
        )
        raise convert.ExportFailed(
            "exported model does not match Keras on the test split: "
            + ", ".join(describe_failure(n, report[n]) for n in failed)
            + f"; parity.json and the failing files are kept in {kept}"
            + (
                " (quantized and optional formats can be dropped instead: "
                "export.on_variant_failure=drop)"
                if session.config.on_variant_failure == "fail" and set(failed) & set(OPTIONAL)
                else ""
            )
        )


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
