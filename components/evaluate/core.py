"""The evaluate stage: the test split, touched only here, and the blessing gate."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from components.common import metadata, progress
from components.common.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.common.augment import load_policy
from components.common.errors import UserError
from components.common.models import load_model, metadata_rows
from components.evaluate import report
from components.evaluate.baseline import compare as compare_baseline
from components.evaluate.config import EvaluateConfig
from components.evaluate.gate import bless
from components.evaluate.metrics import classification_metrics, confusion, most_confused_pairs

STAGE = "evaluate"


def predict_probs(
    model, images: np.ndarray, batch_size: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Class probabilities; `rows` is the metadata input of a two-input model."""
    inputs = metadata.model_inputs(images.astype(np.float32), rows)
    probs = np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0), dtype=np.float64)
    return probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 within ~1e-7


def run(
    config: EvaluateConfig, dataset: str | Path, model_dir: str | Path, output: str | Path
) -> dict[str, Any]:
    """Evaluate the model on the test split; write metrics, analysis, report and blessing."""
    from components.common.records import load_split_arrays
    from components.evaluate import analysis, robustness

    dataset = Path(dataset)
    record = StageRecord(STAGE, config, {"dataset": str(dataset), "model": str(model_dir)})
    classes = read_json(dataset / "classes.json")
    size = int(read_json(dataset / "stats.json")["image_size"])
    model = load_model(model_dir)
    if model.output_shape[-1] != len(classes):
        raise UserError(
            f"the model predicts {model.output_shape[-1]} classes but the dataset "
            f"has {len(classes)}; evaluate a model trained on this dataset"
        )
    with progress.step(STAGE, "predicting the test and train splits"):
        images, labels, uris = load_split_arrays(dataset, "test", size)
        train_images, train_labels, train_uris = load_split_arrays(dataset, "train", size)
        _, rows = metadata_rows(model, model_dir, dataset, {"test": uris, "train": train_uris})
        probs = predict_probs(model, images, config.batch_size, rows["test"])
        train_probs = predict_probs(model, train_images, config.batch_size, rows["train"])
        embed = analysis.embedding_model(model)
        test_emb, train_emb = (
            np.asarray(
                embed.predict(
                    metadata.model_inputs(split_images.astype(np.float32), split_rows),
                    verbose=0,
                    batch_size=config.batch_size,
                )
            )
            for split_images, split_rows in ((images, rows["test"]), (train_images, rows["train"]))
        )
    predicted = probs.argmax(axis=1)
    metrics = classification_metrics(probs, labels, classes, config.top_k, config.calibration_bins)
    matrix = confusion(labels, predicted, len(classes))
    pairs = most_confused_pairs(matrix, classes)
    metrics["most_confused_pairs"] = pairs

    baseline = None
    if config.baseline_model:
        with progress.step(STAGE, f"re-measuring the baseline {config.baseline_model}"):
            baseline = compare_baseline(
                config.baseline_model,
                dataset,
                images,
                labels,
                uris,
                probs,
                classes,
                lambda model, rows: predict_probs(model, images, config.batch_size, rows),
                lambda p, y: classification_metrics(
                    p, y, classes, config.top_k, config.calibration_bins
                ),
            )
    blessing = bless(metrics, config, baseline)

    # -- error analysis
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]])]  # confident mistakes first
    neighbour_index, neighbour_sim = analysis.nearest_neighbours(
        test_emb[order], train_emb, config.neighbours
    )
    errors = [
        {
            "uri": uris[i],
            "true": classes[labels[i]],
            "predicted": classes[predicted[i]],
            "p_predicted": round(float(probs[i, predicted[i]]), 6),
            "p_true": round(float(probs[i, labels[i]]), 6),
            "nearest_train": [
                {
                    "uri": train_uris[j],
                    "label": classes[train_labels[j]],
                    "similarity": round(float(sim), 4),
                }
                for j, sim in zip(neighbour_index[n], neighbour_sim[n], strict=True)
            ],
        }
        for n, i in enumerate(order)
    ]
    label_errors = [
        {
            "split": split,
            "uri": split_uris[i],
            "given": classes[split_labels[i]],
            "suggested": classes[k],
            "p_suggested": round(p_k, 6),
            "p_given": round(p_given, 6),
        }
        for split, split_probs, split_labels, split_uris in (
            ("test", probs, labels, uris),
            ("train", train_probs, train_labels, train_uris),
        )
        for i, k, p_k, p_given in analysis.likely_label_errors(
            split_probs, split_labels, config.label_error_confidence, limit=10_000
        )
    ]
    label_errors.sort(key=lambda e: -e["p_suggested"])
    gallery = analysis.gallery(probs, labels, classes, config.gallery_per_class)
    slices = analysis.slice_metrics(
        metadata.read_rows(dataset, "test"),
        labels,
        predicted,
        ignore=set(metadata.RESERVED),  # group keys such as g123 are not a slice
    )
    augmentation, custom_layers = load_policy(model_dir)
    with progress.step(STAGE, f"robustness under {augmentation!r} transforms and a flip"):
        robust = robustness.robustness(
            lambda x: predict_probs(model, x, config.batch_size, rows["test"]),
            images,
            labels,
            classes,
            robustness.transforms_for(augmentation, seed=0, custom=custom_layers),
            config.robustness_flag_drop,
        )
    metrics["slices"] = slices
    metrics["robustness"] = robust

    with atomic_dir(output) as work:
        write_json(work / "metrics.json", metrics)
        write_json(work / "blessing.json", blessing)
        write_json(work / "label_errors.json", label_errors)
        write_json(work / "errors_nearest.json", errors)
        with open(work / "confusion_matrix.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *classes])
            for name, row in zip(classes, matrix, strict=True):
                writer.writerow([name, *row.tolist()])
        totals = matrix.sum(axis=1, keepdims=True)
        normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
        with open(work / "confusion_matrix_normalized.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *classes])
            for name, row in zip(classes, normalised, strict=True):
                writer.writerow([name, *(round(float(v), 6) for v in row)])
        with open(work / "errors.csv", "w", newline="") as handle:
            writer = csv.DictWriter(
                handle, ["uri", "true", "predicted", "p_predicted", "p_true"], extrasaction="ignore"
            )
            writer.writeheader()
            writer.writerows(errors)
        picture = report.confusion_png(matrix, classes)
        (work / "confusion_matrix.png").write_bytes(picture)
        report.write(
            work,
            metrics,
            blessing,
            errors,
            pairs,
            picture,
            report.Extras(
                images=images,
                train_images=train_images,
                labels=labels,
                probs=probs,
                classes=classes,
                uris=uris,
                train_uris=train_uris,
                gallery=gallery,
                label_errors=label_errors,
                order=order,
                limit=config.max_listed,
            ),
            limit=config.max_listed,
        )
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
