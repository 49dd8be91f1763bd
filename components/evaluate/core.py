"""The evaluate stage: the test split, touched only here, and the blessing gate."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from components.common import progress
from components.common.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.evaluate import report
from components.evaluate.config import EvaluateConfig
from components.evaluate.gate import bless
from components.evaluate.metrics import classification_metrics, confusion, most_confused_pairs

STAGE = "evaluate"


def load_model(model_dir: str | Path):
    import keras

    path = Path(model_dir) / "model.keras"
    if not path.exists():
        raise FileNotFoundError(
            f"no model.keras in {model_dir}; is this the output folder of `visionpipe train`?"
        )
    return keras.models.load_model(path, compile=False)


def run(
    config: EvaluateConfig, dataset: str | Path, model_dir: str | Path, output: str | Path
) -> dict[str, Any]:
    """Evaluate the model on the test split; write metrics, analysis, report and blessing."""
    from components.common.records import load_split_arrays

    record = StageRecord(STAGE, config, {"dataset": str(dataset), "model": str(model_dir)})
    classes = read_json(Path(dataset) / "classes.json")
    size = int(read_json(Path(dataset) / "stats.json")["image_size"])
    model = load_model(model_dir)
    with progress.step(STAGE, "predicting the test split"):
        images, labels, uris = load_split_arrays(dataset, "test", size)
        probs = model.predict(images.astype(np.float32), batch_size=config.batch_size, verbose=0)
    probs = np.asarray(probs, dtype=np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 only within ~1e-7
    predicted = probs.argmax(axis=1)
    metrics = classification_metrics(probs, labels, classes, config.top_k, config.calibration_bins)
    matrix = confusion(labels, predicted, len(classes))
    pairs = most_confused_pairs(matrix, classes)
    metrics["most_confused_pairs"] = pairs
    blessing = bless(metrics, config)
    errors = [
        {
            "uri": uris[i],
            "true": classes[labels[i]],
            "predicted": classes[predicted[i]],
            "p_predicted": round(float(probs[i, predicted[i]]), 6),
            "p_true": round(float(probs[i, labels[i]]), 6),
        }
        for i in np.flatnonzero(predicted != labels)
    ]
    errors.sort(key=lambda e: -e["p_predicted"])  # confident mistakes first

    with atomic_dir(output) as work:
        write_json(work / "metrics.json", metrics)
        write_json(work / "blessing.json", blessing)
        with open(work / "confusion_matrix.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *classes])
            for name, row in zip(classes, matrix, strict=True):
                writer.writerow([name, *row.tolist()])
        with open(work / "errors.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["uri", "true", "predicted", "p_predicted", "p_true"])
            writer.writeheader()
            writer.writerows(errors)
        picture = report.confusion_png(matrix, classes)
        (work / "confusion_matrix.png").write_bytes(picture)
        report.write(work, metrics, blessing, errors, pairs, picture)
        write_json(work / "classes.json", classes)
        record.write(work)
    verdict = "blessed" if blessing["blessed"] else "not blessed: " + "; ".join(blessing["reasons"])
    progress.log(
        STAGE,
        f"test accuracy {metrics['accuracy']:.4f}, macro F1 "
        f"{metrics['macro_f1']:.4f} on {len(labels)} images; {verdict}",
    )
    return {
        "metrics": metrics,
        "blessing": blessing,
        "confusion_matrix": matrix.tolist(),
        "classes": classes,
    }
