"""The evaluate stage: the test split, touched only here, and the blessing gate."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.evaluate import analysis, baselines, report, robustness
from components.evaluate.baseline import compare as compare_baseline
from components.evaluate.calibration import apply_temperature, calibrate, negative_log_likelihood
from components.evaluate.config import EvaluateConfig
from components.evaluate.gate import bless, compare_predictions
from components.evaluate.metrics import (
    classification_metrics,
    confusion,
    expected_calibration_error,
    most_confused_pairs,
)
from components.infra import progress
from components.infra.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.infra.errors import UserError
from components.vision import metadata
from components.vision.augment import load_policy
from components.vision.models import (
    CALIBRATION_FILE,
    embedding_model,
    load_model,
    metadata_rows,
    model_digest,
    predict_batches,
    predict_probs,
)
from components.vision.records import stratified_indices

STAGE = "evaluate"


@dataclass
class Split:
    """One split as the model saw it."""

    images: Any  # (N, S, S, 3) uint8: an array, or (test) a SplitImages read on demand
    labels: np.ndarray
    uris: list[str]
    rows: np.ndarray | None  # the metadata input, for a two-input model
    probs: np.ndarray
    embeddings: np.ndarray  # the penultimate layer, for nearest neighbours


def run(
    config: EvaluateConfig, dataset: str | Path, model_dir: str | Path, output: str | Path
) -> dict[str, Any]:
    """Evaluate the model on the test split; write metrics, analysis, report and blessing."""
    dataset = Path(dataset)
    record = StageRecord(STAGE, config, {"dataset": str(dataset), "model": str(model_dir)})
    classes = read_json(dataset / "classes.json")
    model = load_checked_model(model_dir, classes)
    with progress.step(STAGE, "predicting the test and train splits"):
        test, train, sampling = predict_splits(config, model, model_dir, dataset)
    raw_test = test.probs
    calibration = fit_calibration(config, model, model_dir, dataset)
    test.probs = apply_temperature(test.probs, calibration["temperature"])
    train.probs = apply_temperature(train.probs, calibration["temperature"])
    metrics = classification_metrics(
        test.probs, test.labels, classes, config.top_k, config.calibration_bins
    )
    metrics.update(uncalibrated_metrics(raw_test, test.labels, config, calibration))
    ensemble = ensemble_report(config, model, test, classes, calibration["temperature"])
    if ensemble:
        metrics["ensemble"] = ensemble
    matrix = confusion(test.labels, test.probs.argmax(axis=1), len(classes))
    metrics["most_confused_pairs"] = most_confused_pairs(matrix, classes)
    metrics["baselines"] = baselines.measure(train, test, classes, metrics["accuracy"])
    baseline = measure_baseline(config, dataset, test, classes) if config.baseline_model else None
    blessing = bless(metrics, config, baseline)
    errors, order, label_errors = error_analysis(
        config, model, model_dir, dataset, test, train, classes, metrics, sampling
    )
    with atomic_dir(output) as work:
        write_evaluation(work, metrics, blessing, errors, label_errors, matrix, classes)
        # export bakes the temperature in; predict and explain on this model.keras apply it
        write_json(
            work / CALIBRATION_FILE, {**calibration, "model_sha256": model_digest(model_dir)}
        )
        write_report(work, config, metrics, blessing, errors, order, label_errors, test, train,
                     matrix, classes, model)  # fmt: skip
        record.write(work)
    verdict = "blessed" if blessing["blessed"] else "not blessed: " + "; ".join(blessing["reasons"])
    progress.log(
        STAGE,
        f"test accuracy {metrics['accuracy']:.4f}, macro F1 "
        f"{metrics['macro_f1']:.4f} on {len(test.labels)} images; {verdict}",
    )
    return {
        "metrics": metrics,
        "blessing": blessing,
        "confusion_matrix": matrix.tolist(),
        "classes": classes,
    }


def error_analysis(config, model, model_dir, dataset, test, train, classes, metrics, sampling):
    """Every mistake with its nearest training images, likely label errors, slices and
    robustness (the last two into `metrics`); (errors, their order, label errors)."""
    errors, order = misclassified(config, test, train, classes)
    label_errors = likely_label_errors(config, test, train, classes)
    metrics["slices"] = analysis.slice_metrics(
        metadata.read_rows(dataset, "test"),
        test.labels,
        test.probs.argmax(axis=1),
        ignore=set(metadata.RESERVED),  # group keys such as g123 are not a slice
    )
    metrics["robustness"] = robustness_check(config, model, model_dir, test, classes)
    sampling["robustness"] = metrics["robustness"].pop("sampling")
    metrics["sampling"] = sampling
    return errors, order, label_errors


def load_checked_model(model_dir, classes: list[str]):
    model = load_model(model_dir)
    if model.output_shape[-1] != len(classes):
        raise UserError(
            f"the model predicts {model.output_shape[-1]} classes but the dataset "
            f"has {len(classes)}; evaluate a model trained on this dataset"
        )
    return model


def predict_splits(
    config: EvaluateConfig, model, model_dir, dataset: Path
) -> tuple[Split, Split, dict[str, Any]]:
    """Probabilities and float16 embeddings of the test split and of a stratified sample of
    the train split (all of it up to evaluate.max_train_analysis images); what was sampled."""
    from components.vision.records import load_split_arrays, stratified_sample, streamed_split

    size = int(read_json(dataset / "stats.json")["image_size"])
    keep, total = stratified_sample(dataset, "train", config.max_train_analysis)
    arrays = {
        # the test split is streamed for predictions; only the images the report shows
        # (and robustness's sample) are ever held
        "test": streamed_split(dataset, "test", size),
        "train": load_split_arrays(dataset, "train", size, keep=keep),
    }
    _, rows = metadata_rows(model, model_dir, dataset, {s: a[2] for s, a in arrays.items()})
    embed = embedding_model(model)
    splits = {}
    for split, (images, labels, uris) in arrays.items():
        splits[split] = Split(
            images,
            labels,
            uris,
            rows[split],
            predict_probs(model, images, config.batch_size, rows[split]),
            predict_batches(embed, images, config.batch_size, rows[split], np.float16),
        )
    sampling = {
        "train_analysis": {
            "images": len(arrays["train"][2]),
            "of": total,
            "sampled": keep is not None,
            "limit": config.max_train_analysis,
        }
    }
    return splits["test"], splits["train"], sampling


def ensemble_report(
    config: EvaluateConfig, model, test: Split, classes: list[str], temperature: float
) -> dict[str, Any] | None:
    """Each member of an averaged ensemble on the test split, beside the average."""
    from components.vision.models import ensemble_members

    members = ensemble_members(model)
    if not members:
        return None
    rows = []
    for member in members:
        probs = apply_temperature(
            predict_probs(member, test.images, config.batch_size, test.rows), temperature
        )
        found = classification_metrics(
            probs, test.labels, classes, config.top_k, config.calibration_bins
        )
        rows.append(
            {
                "member": member.name,
                **{k: found[k] for k in ("accuracy", "macro_f1", "log_loss", "ece")},
            }
        )
    average = classification_metrics(
        test.probs, test.labels, classes, config.top_k, config.calibration_bins
    )
    best = max(r["accuracy"] for r in rows)
    return {
        "members": rows,
        "average": {k: average[k] for k in ("accuracy", "macro_f1", "log_loss", "ece")},
        "best_member_accuracy": best,
        "beats_best_member": average["accuracy"] > best,
    }


def fit_calibration(config: EvaluateConfig, model, model_dir, dataset: Path) -> dict[str, Any]:
    """Temperature scaling fitted on the val split (T = 1 when evaluate.calibrate is off)."""
    if not config.calibrate:
        return {"temperature": 1.0, "kept": False, "fitted_on": None}
    from components.vision.records import streamed_split

    size = int(read_json(dataset / "stats.json")["image_size"])
    images, labels, uris = streamed_split(dataset, "val", size)  # streamed: never held
    _, rows = metadata_rows(model, model_dir, dataset, {"val": uris})
    probs = predict_probs(model, images, config.batch_size, rows["val"])
    found = calibrate(probs, labels, config.calibration_bins)
    progress.log(
        STAGE,
        f"temperature {found['temperature']:.3f} fitted on {len(labels)} val images"
        + (
            f" (val log loss {found['val_before']['log_loss']:.4f} -> "
            f"{found['val_after']['log_loss']:.4f}, ECE {found['val_before']['ece']:.4f} -> "
            f"{found['val_after']['ece']:.4f})"
            if found.get("kept")
            else " (kept at 1: scaling did not improve val)"
        ),
    )
    return found


def uncalibrated_metrics(
    raw: np.ndarray, labels: np.ndarray, config: EvaluateConfig, calibration: dict[str, Any]
) -> dict[str, Any]:
    """What the model's own softmax scores: beside `ece` and `log_loss` (the shipped,
    temperature-scaled probabilities)."""
    ece, reliability = expected_calibration_error(raw, labels, config.calibration_bins)
    return {
        "temperature": calibration["temperature"],
        "ece_uncalibrated": ece,
        "log_loss_uncalibrated": negative_log_likelihood(raw, labels) if len(labels) else 0.0,
        "reliability_uncalibrated": reliability,
        "calibration": calibration,
    }


def measure_baseline(config: EvaluateConfig, dataset: Path, test: Split, classes: list[str]):
    """The baseline re-measured on today's test split (components/evaluate/baseline.py)."""
    with progress.step(STAGE, f"re-measuring the baseline {config.baseline_model}"):
        return compare_baseline(
            config.baseline_model,
            dataset,
            test.images,
            test.labels,
            test.uris,
            test.probs,
            classes,
            lambda model, rows: predict_probs(model, test.images, config.batch_size, rows),
            lambda p, y: classification_metrics(
                p, y, classes, config.top_k, config.calibration_bins
            ),
            lambda y, candidate, base, uris: compare_predictions(
                y, candidate, base, uris, classes, config
            ),
            min_known_images=config.min_known_images,
            few_known_images=config.few_known_images,
        )


def misclassified(
    config: EvaluateConfig, test: Split, train: Split, classes: list[str]
) -> tuple[list[dict], np.ndarray]:
    """Every misclassified test image, confident mistakes first, with its nearest training
    images; and their indices in that order."""
    predicted = test.probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != test.labels)
    order = wrong[np.argsort(-test.probs[wrong, predicted[wrong]])]
    neighbour_index, neighbour_sim = analysis.nearest_neighbours(
        test.embeddings[order], train.embeddings, config.neighbours
    )
    errors = [
        {
            "uri": test.uris[i],
            "true": classes[test.labels[i]],
            "predicted": classes[predicted[i]],
            "p_predicted": round(float(test.probs[i, predicted[i]]), 6),
            "p_true": round(float(test.probs[i, test.labels[i]]), 6),
            "nearest_train": [
                {
                    "uri": train.uris[j],
                    "label": classes[train.labels[j]],
                    "similarity": round(float(sim), 4),
                }
                for j, sim in zip(neighbour_index[n], neighbour_sim[n], strict=True)
            ],
        }
        for n, i in enumerate(order)
    ]
    return errors, order


def likely_label_errors(
    config: EvaluateConfig, test: Split, train: Split, classes: list[str]
) -> list[dict]:
    """Test and train items whose label the model contradicts surely, most sure first."""
    found = [
        {
            "split": name,
            "uri": split.uris[i],
            "given": classes[split.labels[i]],
            "suggested": classes[k],
            "p_suggested": round(p_k, 6),
            "p_given": round(p_given, 6),
        }
        for name, split in (("test", test), ("train", train))
        for i, k, p_k, p_given in analysis.likely_label_errors(
            split.probs, split.labels, config.label_error_confidence, limit=10_000
        )
    ]
    return sorted(found, key=lambda e: -e["p_suggested"])


def robustness_check(config: EvaluateConfig, model, model_dir, test: Split, classes: list[str]):
    """Test accuracy under each transform of the training policy, and a flip."""
    augmentation, custom_layers = load_policy(model_dir)
    chosen = stratified_indices(test.labels, config.max_robustness_images)
    rows = None if test.rows is None else test.rows[chosen]
    with progress.step(STAGE, f"robustness under {augmentation!r} transforms and a flip"):
        found = robustness.robustness(
            lambda x, where: predict_probs(
                model, x, config.batch_size, None if rows is None else rows[where]
            ),
            test.images[chosen],
            test.labels[chosen],
            classes,
            robustness.transforms_for(augmentation, seed=0, custom=custom_layers),
            config.robustness_flag_drop,
        )
    found["sampling"] = {
        "images": len(chosen),
        "of": len(test.labels),
        "sampled": len(chosen) < len(test.labels),
        "limit": config.max_robustness_images,
    }
    return found


def write_evaluation(
    work: Path, metrics, blessing, errors, label_errors, matrix: np.ndarray, classes
) -> None:
    """The evaluation's contract files (report aside)."""
    write_json(work / "metrics.json", metrics)
    write_json(work / "blessing.json", blessing)
    write_json(work / "label_errors.json", label_errors)
    write_json(work / "errors_nearest.json", errors)
    write_json(work / "classes.json", classes)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    for name, values in (
        ("confusion_matrix.csv", matrix.tolist()),
        ("confusion_matrix_normalized.csv", [[round(float(v), 6) for v in r] for r in normalised]),
    ):
        with open(work / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *classes])
            for label, row in zip(classes, values, strict=True):
                writer.writerow([label, *row])
    with open(work / "errors.csv", "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, ["uri", "true", "predicted", "p_predicted", "p_true"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(errors)


FEATURE_MAP_CLASSES = 20  # rows of the report's feature-map grid (the first classes)


def where_it_looks(config, model, test: Split, gallery, classes) -> dict[str, Any]:
    """Grad-CAM overlays of the gallery's test images (index -> picture) and the first conv
    layers' feature maps of one test image per class (correctly read when one is)."""
    if not config.explain:
        return {"overlays": {}, "feature_maps": []}
    from components.vision import gradcam

    with progress.step(STAGE, "Grad-CAM of the gallery, feature maps per class"):
        shown = sorted({i for found in gallery.values() for ids in found.values() for i in ids})
        overlays = {}
        for start in range(0, len(shown), config.batch_size):
            ids = shown[start : start + config.batch_size]
            images, rows = test_batch(test, ids)
            cams = gradcam.heatmaps(model, images, rows)[0]
            pairs = zip(ids, images, cams, strict=True)
            overlays.update({i: gradcam.overlay(image, cam) for i, image, cam in pairs})
        picks = class_examples(test, classes[:FEATURE_MAP_CLASSES])
        maps = []
        if picks:
            images, rows = test_batch(test, [i for _, i in picks])
            found = gradcam.feature_maps(model, images, rows)
            maps = [(name, images[n], found[n]) for n, (name, _) in enumerate(picks)]
    return {"overlays": overlays, "feature_maps": maps}


def test_batch(test: Split, ids: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """The test images `ids` as one (N, S, S, 3) batch, with their metadata rows."""
    return np.stack([test.images[i] for i in ids]), None if test.rows is None else test.rows[ids]


def class_examples(test: Split, classes: list[str]) -> list[tuple[str, int]]:
    """(class, test index) per class that has test images: its first image read right,
    else its first."""
    predicted = test.probs.argmax(axis=1)
    picks = []
    for k, name in enumerate(classes):
        mine = np.flatnonzero(test.labels == k)
        right = mine[predicted[mine] == k]
        if len(mine):
            picks.append((name, int((right if len(right) else mine)[0])))
    return picks


def write_report(
    work, config, metrics, blessing, errors, order, label_errors, test, train, matrix, classes,
    model,
) -> None:  # fmt: skip
    picture = report.confusion_png(matrix, classes)
    (work / "confusion_matrix.png").write_bytes(picture)
    gallery = analysis.gallery(test.probs, test.labels, classes, config.gallery_per_class)
    if hasattr(test.images, "prefetch"):  # read the images the report shows, in one pass
        position = {uri: i for i, uri in enumerate(test.uris)}
        shown = [int(i) for i in order[: config.max_listed]]
        shown += [i for found in gallery.values() for ids in found.values() for i in ids]
        shown += [position[e["uri"]] for e in label_errors if e["split"] == "test"][
            : config.max_listed
        ]
        test.images.prefetch(shown)
    looks = where_it_looks(config, model, test, gallery, classes)
    report.write(
        work,
        metrics,
        blessing,
        errors,
        metrics["most_confused_pairs"],
        picture,
        report.Extras(
            images=test.images,
            train_images=train.images,
            labels=test.labels,
            probs=test.probs,
            classes=classes,
            uris=test.uris,
            train_uris=train.uris,
            gallery=gallery,
            label_errors=label_errors,
            order=order,
            limit=config.max_listed,
            overlays=looks["overlays"],
            feature_maps=looks["feature_maps"],
        ),
        limit=config.max_listed,
    )
    from components.infra.tensorboard import write_images

    write_images(  # the pictures in TensorBoard too: tensorboard --logdir <run folder>
        work / "tensorboard",
        {
            "evaluation/confusion_matrix": work / "confusion_matrix.png",
            "evaluation/error_gallery": work / "error_gallery.png",
            "evaluation/gradcam_gallery": work / "gradcam_gallery.png",
            "evaluation/feature_maps": work / "feature_maps.png",
        },
    )
