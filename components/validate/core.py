"""The validate stage: today's prepared dataset against the deployed version, before training.

Steps: find the reference (components/validate/reference.py); sort today's images
into new, known (same sha256, same label) and relabelled; run the checks that need
no model (checks.py) and those that ask the deployed model (model_checks.py) on
stratified samples: the new images, and the deployed version's own published
sample of its train/val/test images (dataset/reference/, so a rolling bucket that
no longer holds them still gets the checks; versions published without one: its
images still in today's data); write `anomalies.json`, `report.md`/`report.html`
and `config.json`; then, with `on_anomaly: stop`, refuse the run with one line per
anomaly (exit 2), unless the check is in `validate.accept` (recorded as accepted).

A check that could not run is "skipped" with its reason, never "pass": it is named
in the console, the record and the run's summary, and `on_skipped: stop` refuses the
night like an anomaly. Nothing published at the reference is the first night only as
`validate.first_night` allows (components/infra/registry.py: first_night_refusal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.infra import progress, registry
from components.infra.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.infra.errors import UserError
from components.validate import checks, model_checks, report
from components.validate.config import ValidateConfig
from components.validate.reference import Reference, load, sample_folder
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
        result = first_night(reference, config)
    else:
        with sample_folder(found) as sample_dir:
            with progress.step(STAGE, f"checking {len(today.rows)} images against {found.label}"):
                result = compare(config, today, found, sample_dir)
    decide(result, config)
    with atomic_dir(output) as work:
        write_json(work / "anomalies.json", result)
        report.write(work, result, config)
        record.write(work, decision=result["decision"])
    say(result)
    if result["decision"] == "stop":
        raise ValidationFailed(refusal(result))
    return result


def refusal(result: dict[str, Any]) -> str:
    """The one line a stopped night ends with: every anomaly, and every skipped check
    when on_skipped is stop."""
    skipped = result["skipped"] if result["on_skipped"] == "stop" else []
    parts = [
        f"{len(result['anomalies'])} anomalies" if result["anomalies"] else "",
        f"{len(skipped)} checks skipped (validate.on_skipped=stop)" if skipped else "",
    ]
    fixes = [
        "fix the data, or accept a deliberate change with validate.accept=<check>"
        if result["anomalies"]
        else "",
        "validate.on_skipped=warn lets a night through with checks skipped" if skipped else "",
    ]
    return (
        f"validate: {' and '.join(p for p in parts if p)} in the new data against "
        f"{result['reference_label']} (validate.on_anomaly={result['policy']}; nothing was "
        "trained): "
        + " | ".join([*result["anomalies"], *(f"skipped {line}" for line in skipped)])
        + " -- "
        + "; ".join(f for f in fixes if f)
    )


def first_night(reference: str, config: ValidateConfig) -> dict[str, Any]:
    """Nothing published at `reference`: the first night, as validate.first_night allows."""
    refused = (
        registry.first_night_refusal(reference, config.first_night, "validate.reference")
        if reference
        else None
        if config.first_night != "refuse"
        else "validate: no reference is configured (validate.reference, "
        "evaluate.baseline_model, prepare.keep_splits or push.registry) and "
        "validate.first_night=refuse; name the registry with push.registry, or run the first "
        "night with --first-night"
    )
    if refused:
        raise UserError(refused)
    why = (
        f"the first night: nothing is published at {reference} yet, nothing to compare with "
        f"(validate.first_night={config.first_night})"
        if reference
        else "no reference is configured (validate.reference, evaluate.baseline_model, "
        "prepare.keep_splits or push.registry): nothing to compare with"
    )
    return {
        "reference": reference or None,
        "reference_label": None,
        "compared": False,
        "first_night": True,
        "note": why,
        "checks": [],
        "counts": {},
    }


def compare(
    config: ValidateConfig, today: Today, found: Reference, sample_dir: Path | None
) -> dict[str, Any]:
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
    groups, sizes = sample_groups(config, today, found, new, same, sample_dir)
    seen = look(config, found, groups, sizes)
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
        "reference_sample": "published" if sample_dir is not None else "today's known images",
    }


def sample_groups(config, today: Today, found: Reference, new, same, sample_dir):
    """The four groups the image and model checks look at, each row tagged with the
    dataset folder its record is read from, and each folder's image size.

    new: today's images in none of the reference's splits (of classes the deployed model
    knows: a new class's images are the schema check's). train/val/test: the deployed
    version's published sample of its own images when it has one (whatever today's data
    still holds), else its images still in today's data with their labels.
    """
    mine = str(today.dataset)
    sizes = {mine: today.image_size}
    groups = {
        "new": sample(
            [{**r, "source": mine} for r in new if r["label"] in found.classes],
            config.max_images,
        )
    }
    if sample_dir is not None:
        theirs = str(sample_dir)
        sizes[theirs] = int(read_json(sample_dir / "stats.json")["image_size"])
        for split in SPLITS:
            rows = [
                {**row, "split": split, "source": theirs}
                for row in metadata.read_rows(sample_dir, split)
            ]
            groups[split] = sample(rows, config.max_images)
        return groups, sizes
    known = found.rows
    for split in SPLITS:
        rows = [{**r, "source": mine} for r in same if known[r["sha256"]].split == split]
        groups[split] = sample(rows, config.max_images)
    return groups, sizes


def sample(rows: list[dict[str, str]], limit: int) -> list[dict[str, str]]:
    """At most `limit` rows, each label in proportion (records.stratified_indices)."""
    from components.vision.records import stratified_indices

    labels = np.array([row["label"] for row in rows])
    return [rows[i] for i in stratified_indices(labels, limit)]


def key(row: dict[str, str]) -> tuple[str, str]:
    """An image's identity across the two datasets a night reads (today's, the sample)."""
    return row["source"], row["uri"]


def look(config, found: Reference, groups, sizes) -> dict[tuple[str, str], dict[str, Any]]:
    """key -> image features (and, with the deployed model, its probabilities and
    embedding) for every sampled image; only the sampled records are decoded."""
    from components.vision.records import load_split_arrays

    model = deployed_model(found)
    embed = None
    if model is not None:
        from components.vision.models import embedding_model

        embed = embedding_model(model)
    wanted: dict[tuple[str, str], set[str]] = {}
    for rows in groups.values():
        for row in rows:
            wanted.setdefault((row["source"], row["split"]), set()).add(row["uri"])
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for (source, split), uris in sorted(wanted.items()):
        images, _, names = load_split_arrays(source, split, sizes[source], keep=uris)
        features = checks.image_features(images)
        outputs = (
            predict(config, model, embed, found, Path(source), split, images, names)
            if model
            else None
        )
        for i, uri in enumerate(names):
            found_here = seen[(source, uri)] = {n: values[i] for n, values in features.items()}
            if outputs is not None:
                found_here["probs"], found_here["embedding"] = outputs[0][i], outputs[1][i]
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


def predict(config, model, embed, found: Reference, dataset: Path, split, images, uris):
    """(probabilities, embeddings) of the deployed model (`embed`: its penultimate layer),
    at its own input size; `dataset`: the folder the images (and metadata) come from."""
    from components.vision.models import metadata_rows, predict_batches, predict_probs

    side = model.inputs[0].shape[1]
    if side and side != images.shape[1]:
        import tensorflow as tf

        images = tf.cast(tf.image.resize(images, (side, side)), tf.uint8).numpy()
    _, rows = metadata_rows(model, found.model_dir, dataset, {split: list(uris)})
    probs = predict_probs(model, images, config.batch_size, rows[split])
    embeddings = predict_batches(embed, images, config.batch_size, rows[split])
    return probs, embeddings.reshape(len(images), -1)


def image_stats(config, groups, seen, label) -> checks.Check:
    def features(rows):
        rows = [r for r in rows if key(r) in seen]
        width = np.array([float(r.get("width") or 0) for r in rows])
        height = np.array([float(r.get("height") or 0) for r in rows])
        out = {
            "width": width,
            "height": height,
            "aspect": np.divide(width, height, out=np.zeros_like(width), where=height > 0),
        }
        for name in ("greyscale", "brightness", "contrast", "sharpness"):
            out[name] = np.array([seen[key(r)][name] for r in rows], dtype=np.float64)
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
        rows = [r for r in rows if key(r) in seen]
        views[name] = model_checks.Seen(
            [r["uri"] for r in rows],
            [r["label"] for r in rows],
            np.array([seen[key(r)]["probs"] for r in rows]).reshape(len(rows), len(found.classes)),
            np.array([seen[key(r)]["embedding"] for r in rows], np.float32).reshape(
                len(rows), width
            ),
        )
    ood, far = model_checks.out_of_distribution(views, config, found.label)
    agreement = model_checks.label_agreement(views, far, found.classes, config, found.label)
    return [ood, agreement]


def decide(result: dict[str, Any], config: ValidateConfig) -> None:
    """anomalies (one line each), accepted ones, skipped checks (one line each), and the
    decision: pass (every check ran and passed) | warn | stop | first_night."""
    anomalies, accepted, skipped = [], [], []
    for check in result["checks"]:
        if check["verdict"] == "skipped":
            skipped.append(f"{check['check']}: {check['reason']}")
        if check["verdict"] != "anomaly":
            continue
        if check["check"] in config.accept:
            check["accepted"] = True
            accepted.extend(check["anomalies"])
        else:
            anomalies.extend(check["anomalies"])
    result["anomalies"], result["accepted"], result["skipped"] = anomalies, accepted, skipped
    result["accept"] = list(config.accept)
    result["policy"], result["on_skipped"] = config.on_anomaly, config.on_skipped
    stop = (anomalies and config.on_anomaly == "stop") or (skipped and config.on_skipped == "stop")
    if not result["compared"]:
        result["decision"] = "first_night"
    else:
        result["decision"] = "stop" if stop else "warn" if anomalies or skipped else "pass"


def say(result: dict[str, Any]) -> None:
    if not result["compared"]:
        progress.log(STAGE, result["note"])
        return
    for line in result["accepted"]:
        progress.log(STAGE, f"accepted (validate.accept): {line}")
    for line in result["anomalies"]:
        progress.log(STAGE, f"ANOMALY: {line}")
    for line in result["skipped"]:
        progress.log(STAGE, f"SKIPPED (validate.on_skipped={result['on_skipped']}): {line}")
    counts = result["counts"]
    progress.log(
        STAGE,
        f"{counts['new']} new and {counts['known']} known images against "
        f"{result['reference_label']}: {len(result['anomalies'])} anomalies, "
        f"{len(result['skipped'])} checks skipped; decision {result['decision']}",
    )
