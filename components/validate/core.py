"""The validate stage: today's prepared dataset against the deployed version, before training.

Steps: find the reference (components/validate/reference.py); sort today's images
into new, known (same sha256, same label) and relabelled; run the checks that need
no model (checks.py) and those that ask the deployed model (model_checks.py) on
stratified samples; write `anomalies.json`, `report.md`/`report.html` and
`config.json`; then, with `on_anomaly: stop`, refuse the run with one line per
anomaly (exit 2), unless the check is in `validate.accept` (recorded as accepted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.infra import progress
from components.infra.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.infra.errors import UserError
from components.validate import checks, model_checks, report
from components.validate.config import ValidateConfig
from components.validate.reference import Reference, load
from components.vision import metadata

STAGE = "validate"
SPLITS = ("train", "val", "test")


class ValidationFailed(UserError):
    """The new data has anomalies and the policy is stop: one line each, exit 2."""


@dataclass
class Today:
    dataset: Path
    classes: list[str]
    rows: list[dict[str, str]]  # every manifest row, with its split
    image_size: int

    @classmethod
    def read(cls, dataset: Path) -> Today:
        rows = [
            {**row, "split": split}
            for split in SPLITS
            for row in metadata.read_rows(dataset, split)
        ]
        size = int(read_json(dataset / "stats.json")["image_size"])
        return cls(dataset, read_json(dataset / "classes.json"), rows, size)

    def counts(self) -> dict[str, int]:
        return checks.label_counts((row["label"] for row in self.rows), self.classes)


def run(
    config: ValidateConfig, dataset: str | Path, output: str | Path, reference: str = ""
) -> dict[str, Any]:
    """Validate `dataset` against `reference` (default: validate.reference); the record."""
    reference = reference or config.reference
    record = StageRecord(STAGE, config, {"dataset": str(dataset), "reference": reference})
    today = Today.read(Path(dataset))
    found = load(reference) if reference else None
    if found is None:
        result = first_night(reference)
    else:
        with progress.step(STAGE, f"checking {len(today.rows)} images against {found.label}"):
            result = compare(config, today, found)
    decide(result, config)
    with atomic_dir(output) as work:
        write_json(work / "anomalies.json", result)
        report.write(work, result, config)
        record.write(work, decision=result["decision"])
    say(result)
    if result["decision"] == "stop":
        raise ValidationFailed(
            f"validate: {len(result['anomalies'])} anomalies in the new data against "
            f"{result['reference_label']} (validate.on_anomaly=stop; nothing was trained): "
            + " | ".join(result["anomalies"])
            + " -- fix the data, or accept a deliberate change with validate.accept=<check>"
        )
    return result


def first_night(reference: str) -> dict[str, Any]:
    why = (
        f"nothing is published at {reference} yet: the first night has nothing to compare with"
        if reference
        else "no reference is configured (validate.reference, evaluate.baseline_model, "
        "prepare.keep_splits or push.registry): nothing to compare with"
    )
    return {
        "reference": reference or None,
        "reference_label": None,
        "compared": False,
        "note": why,
        "checks": [],
        "counts": {},
    }


def compare(config: ValidateConfig, today: Today, found: Reference) -> dict[str, Any]:
    known_rows = found.rows
    new = [r for r in today.rows if r.get("sha256") not in known_rows]
    same = [
        r
        for r in today.rows
        if r.get("sha256") in known_rows and known_rows[r["sha256"]].label == r["label"]
    ]
    label, before = found.label, found.counts()
    results = [
        checks.schema(today.classes, found.classes, label),
        checks.class_counts(today.counts(), before, config, label),
        checks.class_drift(
            [r["label"] for r in new],
            {k: v for k, v in before.items() if k in today.classes},
            config,
            label,
        ),
    ]
    # the deployed model can only know its own classes: a new class's images are the
    # schema check's, not pictures "unlike anything it knows"
    groups = {
        "new": sample([r for r in new if r["label"] in found.classes], config.max_images),
        **{
            split: sample(
                [r for r in same if known_rows[r["sha256"]].split == split], config.max_images
            )
            for split in SPLITS
        },
    }
    seen = look(config, today, found, groups)
    results.append(image_stats(config, groups, seen, label))
    results.extend(ask_model(config, found, groups, seen))
    results.append(checks.changed_labels(today.rows, known_rows, config, label))
    return {
        "reference": found.reference,
        "reference_label": label,
        "version": found.version,
        "compared": True,
        "checks": [c.to_dict() for c in results],
        "counts": {
            "images": len(today.rows),
            "new": len(new),
            "known": len(same),
            "relabelled": len(today.rows) - len(new) - len(same),
        },
        "sample": {
            g: {"images": len(rows), "limit": config.max_images} for g, rows in groups.items()
        },
    }


def sample(rows: list[dict[str, str]], limit: int) -> list[dict[str, str]]:
    """At most `limit` rows, each label in proportion (records.stratified_indices)."""
    from components.vision.records import stratified_indices

    labels = np.array([row["label"] for row in rows])
    return [rows[i] for i in stratified_indices(labels, limit)]


def look(config, today: Today, found: Reference, groups) -> dict[str, dict[str, Any]]:
    """uri -> image features (and, with the deployed model, its probabilities and embedding)
    for every sampled image, one pass over each split's shards."""
    from components.vision.records import load_split_arrays

    model = deployed_model(found)
    embed = None
    if model is not None:
        from components.vision.models import embedding_model

        embed = embedding_model(model)
    wanted: dict[str, set[str]] = {split: set() for split in SPLITS}
    for rows in groups.values():
        for row in rows:
            wanted[row["split"]].add(row["uri"])
    seen: dict[str, dict[str, Any]] = {}
    for split, uris in wanted.items():
        if not uris:
            continue
        images, _, names = load_split_arrays(today.dataset, split, today.image_size, keep=uris)
        features = checks.image_features(images)
        outputs = (
            predict(config, model, embed, found, today, split, images, names) if model else None
        )
        for i, uri in enumerate(names):
            seen[uri] = {name: values[i] for name, values in features.items()}
            if outputs is not None:
                seen[uri]["probs"], seen[uri]["embedding"] = outputs[0][i], outputs[1][i]
    return seen


def deployed_model(found: Reference):
    """The deployed model, or None (a dataset reference, or other classes than it knows)."""
    if found.model_dir is None:
        return None
    from components.vision.models import load_model

    model = load_model(found.model_dir)
    if model.output_shape[-1] != len(found.classes):
        raise UserError(
            f"validate: {found.label}'s model predicts {model.output_shape[-1]} classes but its "
            f"dataset lists {len(found.classes)}; re-publish the version"
        )
    return model


def predict(config, model, embed, found: Reference, today: Today, split, images, uris):
    """(probabilities, embeddings) of the deployed model (`embed`: its penultimate layer),
    at its own input size."""
    from components.vision.models import metadata_rows, predict_batches, predict_probs

    side = model.inputs[0].shape[1]
    if side and side != images.shape[1]:
        import tensorflow as tf

        images = tf.cast(tf.image.resize(images, (side, side)), tf.uint8).numpy()
    _, rows = metadata_rows(model, found.model_dir, today.dataset, {split: list(uris)})
    probs = predict_probs(model, images, config.batch_size, rows[split])
    embeddings = predict_batches(embed, images, config.batch_size, rows[split])
    return probs, embeddings.reshape(len(images), -1)


def image_stats(config, groups, seen, label) -> checks.Check:
    def features(rows):
        rows = [r for r in rows if r["uri"] in seen]
        width = np.array([float(r.get("width") or 0) for r in rows])
        height = np.array([float(r.get("height") or 0) for r in rows])
        out = {
            "width": width,
            "height": height,
            "aspect": np.divide(width, height, out=np.zeros_like(width), where=height > 0),
        }
        for name in ("greyscale", "brightness", "contrast", "sharpness"):
            out[name] = np.array([seen[r["uri"]][name] for r in rows], dtype=np.float64)
        return out

    reference = [r for split in SPLITS for r in groups[split]]
    return checks.image_stats(features(reference), features(groups["new"]), config, label)


def ask_model(config, found: Reference, groups, seen) -> list[checks.Check]:
    if found.model_dir is None:
        why = f"{found.label} has no model to ask (a dataset folder, not a published version)"
        return [
            checks.skipped("out_of_distribution", config.max_ood_excess, why),
            checks.skipped("label_agreement", config.max_label_disagreement, why),
        ]
    views = {}
    width = len(next(iter(seen.values()))["embedding"]) if seen else 0
    for name, rows in groups.items():
        rows = [r for r in rows if r["uri"] in seen]
        views[name] = model_checks.Seen(
            [r["uri"] for r in rows],
            [r["label"] for r in rows],
            np.array([seen[r["uri"]]["probs"] for r in rows]).reshape(
                len(rows), len(found.classes)
            ),
            np.array([seen[r["uri"]]["embedding"] for r in rows], np.float32).reshape(
                len(rows), width
            ),
        )
    ood, far = model_checks.out_of_distribution(views, config, found.label)
    agreement = model_checks.label_agreement(views, far, found.classes, config, found.label)
    return [ood, agreement]


def decide(result: dict[str, Any], config: ValidateConfig) -> None:
    """anomalies (one line each), accepted ones, and the decision: stop | warn | pass."""
    anomalies, accepted = [], []
    for check in result["checks"]:
        if check["verdict"] != "anomaly":
            continue
        if check["check"] in config.accept:
            check["accepted"] = True
            accepted.extend(check["anomalies"])
        else:
            anomalies.extend(check["anomalies"])
    result["anomalies"], result["accepted"] = anomalies, accepted
    result["accept"] = list(config.accept)
    result["policy"] = config.on_anomaly
    result["decision"] = (
        "pass" if not anomalies else "stop" if config.on_anomaly == "stop" else "warn"
    )


def say(result: dict[str, Any]) -> None:
    if not result["compared"]:
        progress.log(STAGE, result["note"])
        return
    for line in result["accepted"]:
        progress.log(STAGE, f"accepted (validate.accept): {line}")
    for line in result["anomalies"]:
        progress.log(STAGE, f"ANOMALY: {line}")
    counts = result["counts"]
    progress.log(
        STAGE,
        f"{counts['new']} new and {counts['known']} known images against "
        f"{result['reference_label']}: {len(result['anomalies'])} anomalies; "
        f"decision {result['decision']}",
    )
