"""`model_card.md`: what the model is for, what it was trained on, and the proof of export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.infra.artifacts import read_json
from components.infra.html import table_md


def data_lines(stats: dict[str, Any], classes: list[str]) -> list[str]:
    return [
        "## Data",
        f"{stats['counts']['total']} images in {len(classes)} classes "
        f"({', '.join(classes)}); splits {stats['counts']['per_split']}; "
        f"{stats['counts']['rejected']} files rejected in preparation; "
        f"imbalance ratio {stats['imbalance_ratio']}.",
        "",
    ]


def io_lines(size: int, classes: list[str]) -> list[str]:
    return [
        "## Input and output",
        "SavedModel and ONNX: input `image`, float32 (batch, height, width, 3), raw RGB "
        f"values 0..255 of any size; the graph resizes to {size}x{size} (bilinear, aspect "
        "ratio not kept) and normalises. "
        f"For exactly the training pixels, resize to {size}x{size} the way preparation does "
        "(Pillow bilinear; `visionpipe predict` does this). "
        f"Output: (batch, {len(classes)}) class probabilities in the order of `labels.txt`.",
        "",
        f"TFLite: one image, [1, {size}, {size}, 3], float32 pixel values 0..255 "
        "(`model_int8.tflite`: uint8 pixels in, scale 1 and zero point 0, and uint8 scores "
        "out, scale in the file). Each file carries standard TFLite metadata: name, version, "
        "an RGB image input with its normalization (mean 0, std 1: the graph normalises "
        "inside) and the output's labels (`labels.txt`, TENSOR_AXIS_LABELS). MediaPipe "
        "Tasks' ImageClassifier, the TFLite Task Library and Android Studio's ML model "
        "binding take them as they are and resize camera frames themselves, e.g. "
        "`ImageClassifier.create_from_options(ImageClassifierOptions(base_options="
        "BaseOptions(model_asset_path='model.tflite')))`.",
    ]


def training_lines(train_record: dict[str, Any], val: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Training",
        "```",
        *(f"{k}: {v}" for k, v in train_record["config"].items()),
        "```",
        f"Validation accuracy of the kept epoch: {val.get('val_accuracy')}.",
        "",
    ]


def test_lines(evaluation: dict[str, Any] | None) -> list[str]:
    if not evaluation:
        return []
    worst = sorted(evaluation["per_class"].items(), key=lambda kv: kv[1]["recall"])[:3]
    scaled = (
        f" (probabilities temperature-scaled with T = {evaluation['temperature']:.3f}, "
        f"fitted on val and built into every file here; "
        f"{evaluation['ece_uncalibrated']:.4f} without)."
        if evaluation.get("temperature", 1.0) != 1.0
        else "."
    )
    return [
        "## Test metrics",
        f"Accuracy {evaluation['accuracy']:.4f}, macro F1 {evaluation['macro_f1']:.4f}, "
        f"ECE {evaluation['ece']:.4f} on {evaluation['count']} test images" + scaled,
        "Worst classes by recall: "
        + ", ".join(f"{name} {m['recall']:.3f}" for name, m in worst)
        + ".",
        "",
    ]


def parity_lines(report: dict[str, Any], benchmark: dict[str, Any]) -> list[str]:
    parity_rows = [
        [
            name,
            r.get("top1_agreement", "reference"),
            r.get("max_abs_diff", ""),
            r["accuracy"],
            "dropped" if r.get("dropped") else "yes" if r.get("passed", True) else "NO",
        ]
        for name, r in report.items()
    ]
    latency_rows = [
        [name, b["median_ms"], b["p90_ms"], b["batch32_images_per_s"], b["size_bytes"]]
        for name, b in benchmark.items()
    ]
    return [
        "## Export parity on the test split",
        table_md(["format", "top-1 agreement", "max abs diff", "accuracy", "passed"], parity_rows),
        "",
        *dropped_lines(report),
        *precision_lines(report),
        "## Speed on the export machine (CPU)",
        table_md(
            ["format", "batch-1 median ms", "batch-1 p90 ms", "batch-32 images/s", "size bytes"],
            latency_rows,
        ),
        "",
    ]


def dropped_lines(report: dict[str, Any]) -> list[str]:
    """Formats that failed verification and were left out of this export, and why."""
    from components.vision.targets import FILES

    dropped = {name: r["dropped"] for name, r in report.items() if r.get("dropped")}
    if not dropped:
        return []
    return [
        "Dropped from this export (`export.on_variant_failure: drop`), their numbers above "
        "and in parity.json:",
        *(f"- `{FILES.get(name, name)}` ({name}): {why}." for name, why in dropped.items()),
        "",
    ]


def precision_lines(report: dict[str, Any]) -> list[str]:
    """The precision each OpenVINO IR was verified at, which a server must run it at."""
    pinned = {n: r["inference_precision"] for n, r in report.items() if "inference_precision" in r}
    if not pinned:
        return []
    shown = ", ".join(f"{name} at {precision}" for name, precision in pinned.items())
    return [
        f"OpenVINO IRs verified with INFERENCE_PRECISION_HINT {shown} (written in each IR's "
        "rt_info, model_info/inference_precision). On CPUs with bf16 units (AVX512_BF16, AMX) "
        "OpenVINO otherwise computes float layers in bf16; `visionpipe predict` and the OVMS "
        "service push writes (`--plugin_config`) apply it.",
        "",
    ]


LIMITS = [
    "## Intended use and limits",
    "Classifies images like those of the training source into the listed classes. It has "
    "no 'none of these' class: an image from elsewhere is still given one of them. Accuracy "
    "holds only for images from the same distribution as the training data; integer "
    "formats trade the accuracy shown above for size and speed.",
]


def fastest_lines(benchmark: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """The fastest verified file per target, measured here (components/vision/targets.py)."""
    from components.vision.targets import TARGETS, fastest

    rows = []
    for target in TARGETS:
        best = fastest(benchmark, report, target)
        if best is None:
            rows.append([target, "not measured here", "", "", "the export ran without CUDA: "
                         "`model.onnx` with onnxruntime-gpu is the file to try"])  # fmt: skip
            continue
        ratio = f"{best['ratio_to_keras']:.2f}x" if best["ratio_to_keras"] else ""
        where = "LiteRT on the export machine's CPU, not a phone" if "LiteRT" in target else ""
        rows.append(
            [target, f"`{best['file']}`", best["median_ms"], ratio, where or best["runtime"]]
        )
    threads = ", ".join(f"{name} {b.get('threads') or 'default'}" for name, b in benchmark.items())
    return [
        "## The fastest verified file per target",
        "Batch 1, median of the export's benchmark runs; only files that passed parity on the "
        f"test split. CPU threads each runtime computed with: {threads}.",
        table_md(["target", "file", "batch-1 median ms", "vs Keras", "measured with"], rows),
        "",
    ]


def write_model_card(
    folder: Path,
    dataset: Path,
    model_dir: Path,
    report: dict[str, Any],
    benchmark: dict[str, Any],
    classes: list[str],
    size: int,
    evaluation: str | Path | None = None,
) -> None:
    """`evaluation`: the evaluate stage's folder, handed over by the DAG (or --evaluation);
    without it the card has no test metrics section."""
    stats = read_json(dataset / "stats.json")
    train_record = _read_optional(model_dir / "config.json") or {"config": {"model": "model"}}
    val = _read_optional(model_dir / "metrics.json") or {}
    evaluation = _read_optional(Path(evaluation) / "metrics.json") if evaluation else None
    lines = [
        f"# Model card: {train_record['config']['model']} on {stats['source']}",
        "",
        *data_lines(stats, classes),
        *io_lines(size, classes),
        *metadata_lines(folder),
        *serving_lines(folder, size, len(classes)),
        *training_lines(train_record, val),
        *test_lines(evaluation),
        *parity_lines(report, benchmark),
        *fastest_lines(benchmark, report),
        *shipping_lines(benchmark),
        *LIMITS,
    ]
    (folder / "model_card.md").write_text("\n".join(lines) + "\n")


def _read_optional(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.exists() else None


def shipping_lines(benchmark: dict[str, Any]) -> list[str]:
    """Which file to ship where, with this export's own latencies where they decide it."""
    lines = ["## Which file to ship where"]
    if "tflite_int8" in benchmark or "tflite" in benchmark:
        lines.append(
            "- Phones, edge boards, the browser (LiteRT / MediaPipe): `model_int8.tflite` "
            "(uint8 in and out, about a quarter of the float size, fast on int8 NPUs and DSPs) "
            "or `model.tflite` where float accuracy matters more than size. On an x86 server "
            "CPU the int8 TFLite file is slower than float (no int8 kernels there)."
        )
    onnx, int8 = benchmark.get("onnx"), benchmark.get("onnx_int8")
    if onnx and int8:
        ratio = onnx["median_ms"] / int8["median_ms"] if int8["median_ms"] else 0
        choice = "`model_int8.onnx`" if ratio >= 1.0 else "`model.onnx`"
        lines.append(
            f"- Server CPUs (ONNX Runtime, Triton): {choice}; on the export machine batch-1 "
            f"latency was {onnx['median_ms']:.3f} ms (fp32) against {int8['median_ms']:.3f} ms "
            f"(int8), {ratio:.2f}x. Conv-heavy backbones gain most (ResNet50 at 224 px: "
            "docs/benchmarks.md); depthwise-heavy ones little."
        )
    elif onnx:
        lines.append("- Server CPUs (ONNX Runtime, Triton): `model.onnx`.")
    lines.append(
        "- GPU servers: `model.onnx` with onnxruntime-gpu or Triton, or `saved_model/` with "
        "TensorFlow Serving."
    )
    return [*lines, ""]


def serving_lines(folder: Path, size: int, num_classes: int) -> list[str]:
    """How a runtime calls each file: SavedModel signature with a TF Serving REST request,
    ONNX input and output names, shapes and opset."""
    from components.vision.metadata import load

    encoder = load(folder)
    lines = []
    if (folder / "saved_model").is_dir():
        instance = {"image": f"<{size}x{size}x3 nested list of 0..255 floats>"}
        inputs = "`image` float32 (batch, height, width, 3)"
        if encoder is not None:
            instance["metadata"] = f"<{encoder.size} floats>"
            inputs += f" and `metadata` float32 (batch, {encoder.size})"
        lines += [
            "",
            f"SavedModel (`saved_model/`): signature `serving_default`, inputs {inputs}, "
            f"output `probabilities` float32 (batch, {num_classes}). With TensorFlow Serving "
            "(model name `visionpipe`):",
            "```",
            "POST http://<host>:8501/v1/models/visionpipe:predict",
            json.dumps({"signature_name": "serving_default", "instances": [instance]}),
            "```",
            'The answer is `{"predictions": [[p_0, ..., p_K-1]]}` in the order of `labels.txt`.',
        ]
    if (folder / "model.onnx").exists():
        from components.vision.packed import onnx_signature

        signature = onnx_signature(folder / "model.onnx")

        def named(values) -> str:
            return ", ".join(
                f"`{n}` ({', '.join('batch' if d is None else str(d) for d in shape)})"
                for n, shape in values
            )

        lines += [
            "",
            f"ONNX (`model.onnx`, opset {', '.join(map(str, signature['opset']))}, passes "
            "`onnx.checker.check_model(full_check=True)`): inputs "
            f"{named(signature['inputs'])}, outputs {named(signature['outputs'])}; a "
            "dimension given by name is dynamic. ONNX Runtime runs it on CUDA where "
            "onnxruntime-gpu finds a GPU, on the CPU otherwise (benchmark.json says which).",
        ]
    return lines


def metadata_lines(folder: Path) -> list[str]:
    """The second input, for a model trained with metadata columns."""
    from components.vision.metadata import load

    encoder = load(folder)
    if encoder is None:
        return []
    columns = ", ".join(f"`{c.name}` ({c.kind})" for c in encoder.columns)
    return [
        "",
        f"Input `metadata`: float32 (batch, {encoder.size}) built from the columns {columns} "
        "as `metadata.json` says (also packed into the .tflite and .onnx files; "
        "`visionpipe predict --meta NAME=VALUE` does it): "
        + ", ".join(f"`{name}`" for name in encoder.features)
        + ".",
    ]
