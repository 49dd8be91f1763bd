"""The prepare stage: a labelled image source in, a validated, split, sharded dataset out."""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.infra import progress
from components.infra.artifacts import StageRecord, atomic_dir, write_json
from components.infra.errors import UserError
from components.prepare import report
from components.prepare.config import PrepareConfig
from components.prepare.keep import fixed_groups, kept_splits
from components.prepare.scan import inspect_all, worker_count
from components.prepare.shards import write_split
from components.prepare.split import (
    SPLITS,
    duplicate_groups,
    group_keys,
    stratified_split,
)
from components.vision.folds import kfold_assignment
from components.vision.images import ImageLimits
from components.vision.sources import list_source

STAGE = "prepare"


def auto_image_size(sides: list[int]) -> int:
    """The median longer side, clamped to 32..224 and rounded up to a multiple of 8."""
    median = statistics.median(sides) if sides else 224
    return int(min(224, max(32, -(-int(median) // 8) * 8)))


@dataclass
class Plan:
    """Every decision prepare takes on the metadata alone, before a pixel is encoded."""

    rows_by_split: dict[str, list[dict]]
    classes: list[str]
    image_size: int
    rejected: list[dict]
    duplicates: list
    kept: dict
    kept_from: str | None


def run(config: PrepareConfig, source: str, output: str | Path) -> dict[str, Any]:
    """Prepare `source` into `output`; return the stats (also written to `stats.json`).

    The steps are the ones the cluster's fan-out runs as separate tasks
    (components/prepare/fanout.py): inspect every file, plan the splits on the metadata,
    write everything but the shards, encode the shards."""
    record = StageRecord(STAGE, config, {"data": str(source)})
    limits = ImageLimits(min_side=config.min_side, max_pixels=config.max_pixels)
    workers = worker_count(config.workers)
    listing = list_and_log(source)  # refuses a wrong path before anything is printed
    plan = plan_splits(config, listing, inspect_listing(listing, limits, workers))
    with atomic_dir(output) as work:
        stats = write_plan(work, config, listing, plan)
        for split, rows in plan.rows_by_split.items():
            write_records(work, split, rows, plan.image_size, limits, config.shard_size, workers)
        record.write(work)
    log_done(stats, plan, output)
    return stats


def plan_splits(config: PrepareConfig, listing, inspected: list) -> Plan:
    """The global decisions, on the inspected metadata only: rejects, duplicates, small
    classes, the image size, known splits, the stratified group-aware split."""
    good, rejected = check_rejected(config, listing, inspected)
    duplicates, good, for_split = find_duplicates(config, good, rejected)
    good, keys, classes = drop_small_classes(config, listing, good, for_split)
    image_size = config.image_size or auto_image_size([max(r.width, r.height) for r in good])
    kept, kept_from, fixed = known_splits(config, good, keys)
    rows_by_split = assign_splits(config, listing, good, keys, classes, fixed)
    return Plan(rows_by_split, classes, image_size, rejected, duplicates, kept, kept_from)


def write_plan(work: Path, config: PrepareConfig, listing, plan: Plan) -> dict[str, Any]:
    """Everything of the dataset folder but the TFRecord shards; returns the stats."""
    write_manifests(work, config, listing, plan.rows_by_split)
    report.sample_grid(work / "samples.png", plan.rows_by_split, plan.classes)
    write_json(work / "classes.json", plan.classes)
    stats = build_stats(
        listing,
        plan.classes,
        plan.rows_by_split,
        plan.rejected,
        plan.duplicates,
        plan.image_size,
        config,
    )
    if config.keep_splits:
        stats["keep_splits"] = keep_summary(
            config.keep_splits, plan.kept_from, plan.kept, plan.rows_by_split
        )
    write_json(work / "stats.json", stats)
    report.write(work, stats)
    return stats


def log_done(stats: dict[str, Any], plan: Plan, output) -> None:
    progress.log(
        STAGE,
        f"{stats['counts']['total']} images kept, {len(plan.rejected)} rejected, "
        f"{len(plan.duplicates)} duplicate groups -> {output}",
    )


def bar(items, total):
    return progress.bar(items, total, STAGE, "img")


def list_and_log(source: str):
    listing = list_source(source)
    progress.log(
        STAGE,
        f"{source}: {len(listing.items)} image files in {len(listing.classes)} classes"
        + (f", {len(listing.ignored)} other files ignored" if listing.ignored else ""),
    )
    return listing


def inspect_listing(listing, limits: ImageLimits, workers: int) -> list:
    """Decode every file as training will, in the listing's order."""
    with progress.step(STAGE, f"decoding and checking {len(listing.items)} images"):
        return inspect_all(listing, limits, workers, bar)


def check_rejected(config: PrepareConfig, listing, inspected: list):
    """(usable, rejected with reasons). Too many rejects end the stage with one line."""
    rejected = [
        {"uri": r.uri, "label": r.label, "reason": r.rejected} for r in inspected if r.rejected
    ]
    fraction = len(rejected) / len(inspected)
    if fraction > config.max_rejected_fraction:
        examples = "; ".join(f"{r['uri']}: {r['reason']}" for r in rejected[:3])
        raise UserError(
            f"{len(rejected)} of {len(inspected)} images in {listing.source!r} cannot be used "
            f"({fraction:.1%} > max_rejected_fraction {config.max_rejected_fraction}), "
            f"e.g. {examples}; fix or remove them, or raise prepare.max_rejected_fraction"
        )
    return [r for r in inspected if not r.rejected], rejected


def find_duplicates(config: PrepareConfig, good: list, rejected: list[dict]):
    """Exact (and near) copies: (all groups, the images kept, the groups that bind splits).
    Copies under conflicting labels are dropped and listed as rejected (or kept together)."""
    if config.dedupe == "off" or not good:
        return [], good, []
    duplicates = duplicate_groups(
        [r.sha256 for r in good],
        np.array([r.dhash for r in good], dtype=np.uint64),
        np.frombuffer(b"".join(r.thumb for r in good), np.uint8).reshape(-1, 256),
        [r.uri for r in good],
        [r.label for r in good],
        config.near_duplicate_distance if config.dedupe == "near" else None,
    )
    conflicts = [g for g in duplicates if g.conflicting]
    if not conflicts or config.conflicting_labels != "drop":
        return duplicates, good, duplicates
    dropped = {i for g in conflicts for i in g.members}
    for i in sorted(dropped):
        rejected.append(
            {
                "uri": good[i].uri,
                "label": good[i].label,
                "reason": "the same picture appears under conflicting labels",
            }
        )
    keep = [i for i in range(len(good)) if i not in dropped]
    remap = {old: new for new, old in enumerate(keep)}
    for group in duplicates:
        group.members = [remap[i] for i in group.members if i in remap]
    return duplicates, [good[i] for i in keep], [g for g in duplicates if not g.conflicting]


def drop_small_classes(config: PrepareConfig, listing, good: list, duplicates: list):
    """(images, their group keys, classes) without the classes too small to split."""
    counts = Counter(r.label for r in good)
    small = {label: n for label, n in counts.items() if n < config.min_images_per_class}
    if small and config.small_classes == "error":
        raise UserError(
            f"classes below min_images_per_class={config.min_images_per_class}: "
            + ", ".join(f"{label!r} ({n})" for label, n in sorted(small.items()))
            + "; add images, or set prepare.small_classes=drop to leave them out"
        )
    if small:
        progress.log(STAGE, f"dropping small classes (listed in stats.json): {sorted(small)}")
    classes = sorted(label for label in counts if label not in small)
    if len(classes) < 2:
        raise UserError(
            f"only {len(classes)} usable class left in {listing.source!r} after validation; "
            "a classifier needs at least 2"
        )
    groups = {item.uri: item.group for item in listing.items}
    keys = group_keys(len(good), duplicates, [groups[r.uri] for r in good])
    kept = [i for i, r in enumerate(good) if r.label not in small]
    return [good[i] for i in kept], [keys[i] for i in kept], classes


def known_splits(config: PrepareConfig, good: list, keys: list[str]):
    """prepare.keep_splits: (sha256 -> split, where from, group key -> split)."""
    if not config.keep_splits:
        return {}, None, {}
    kept, kept_from = kept_splits(config.keep_splits)
    fixed = fixed_groups(keys, [r.sha256 for r in good], [r.uri for r in good], kept, kept_from)
    progress.log(
        STAGE,
        f"keep_splits: {sum(r.sha256 in kept for r in good)} images keep their split from "
        f"{kept_from}"
        if kept_from
        else f"keep_splits: nothing published at {config.keep_splits} yet; a fresh split",
    )
    return kept, kept_from, fixed


def assign_splits(config: PrepareConfig, listing, good, keys, classes, fixed):
    """The manifest rows of each split: stratified, group-aware, known images pinned."""
    fractions = {
        "train": 1 - config.val_fraction - config.test_fraction,
        "val": config.val_fraction,
        "test": config.test_fraction,
    }
    splits = stratified_split([r.label for r in good], keys, fractions, config.seed, fixed)
    items = {item.uri: item for item in listing.items}
    class_index = {name: i for i, name in enumerate(classes)}
    rows_by_split: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for r, key, split in zip(good, keys, splits, strict=True):
        item = items[r.uri]
        rows_by_split[split].append(
            {
                "uri": r.uri,
                "label": r.label,
                "label_index": class_index[r.label],
                "sha256": r.sha256,
                "width": r.width,
                "height": r.height,
                "group": item.group or key,
                **item.extra,
            }
        )
    return rows_by_split


def write_manifests(work: Path, config, listing, rows_by_split) -> None:
    """splits/*.csv and the optional k-fold manifest."""
    (work / "splits").mkdir(exist_ok=True)
    columns = ["uri", "label", "sha256", "width", "height", "group", *listing.metadata_columns]
    for split, rows in rows_by_split.items():
        write_manifest(work / "splits" / f"{split}.csv", rows, columns)
    if config.kfold:
        pool = rows_by_split["train"] + rows_by_split["val"]
        folds = kfold_assignment(
            [r["label"] for r in pool], [r["group"] for r in pool], config.kfold, config.seed
        )
        write_manifest(
            work / "splits" / "kfold.csv",
            [{**r, "fold": f} for r, f in zip(pool, folds, strict=True)],
            [*columns, "fold"],
        )


def write_records(
    work: Path, split: str, rows, image_size, limits, shard_size, workers, only=None
) -> list[str]:
    """The split's TFRecord shards (only the shard numbers in `only`, when given)."""
    count = len(rows) if only is None else f"{len(only)} shard(s) of {len(rows)}"
    with progress.step(STAGE, f"writing {split} shards ({count} images, {image_size}px)"):
        return write_split(
            work / "tfrecords", split, rows, image_size, limits, shard_size, workers, bar, only
        )


def keep_summary(source: str, label: str | None, kept: dict[str, str], rows_by_split) -> dict:
    """What keep_splits did: how many images kept their split, where the new ones went."""
    return {
        "source": source,
        "found": label is not None,
        "from": label,
        "kept": {s: sum(r["sha256"] in kept for r in rows) for s, rows in rows_by_split.items()},
        "new": {s: sum(r["sha256"] not in kept for r in rows) for s, rows in rows_by_split.items()},
    }


def write_manifest(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def build_stats(listing, classes, rows_by_split, rejected, duplicates, image_size, config):
    """The content of `stats.json`: counts, balance, class weights, rejects, duplicates."""
    per_class = {
        split: {name: sum(1 for r in rows if r["label"] == name) for name in classes}
        for split, rows in rows_by_split.items()
    }
    totals = {name: sum(per_class[s][name] for s in SPLITS) for name in classes}
    train_counts = per_class["train"]
    n_train = sum(train_counts.values())
    # "balanced" weights (n / (k * n_c)), as scikit-learn computes them
    class_weights = {
        name: round(n_train / (len(classes) * max(1, train_counts[name])), 6) for name in classes
    }
    return {
        "source": listing.source,
        "root": listing.root,
        "num_classes": len(classes),
        "classes": classes,
        "image_size": image_size,
        "counts": {
            "total": sum(totals.values()),
            "per_split": {split: len(rows) for split, rows in rows_by_split.items()},
            "per_class": totals,
            "per_class_and_split": per_class,
            "listed": len(listing.items),
            "rejected": len(rejected),
            "ignored": len(listing.ignored),
        },
        "imbalance_ratio": round(max(totals.values()) / max(1, min(totals.values())), 4),
        "class_weights": class_weights,
        "rejected": rejected,
        "ignored": listing.ignored,
        "duplicate_groups": [
            {"kind": g.kind, "uris": g.uris, "labels": g.labels, "conflicting": g.conflicting}
            for g in duplicates
        ],
        "groups": {split: len({r["group"] for r in rows}) for split, rows in rows_by_split.items()},
        "split_fractions": {
            "train": round(1 - config.val_fraction - config.test_fraction, 6),
            "val": config.val_fraction,
            "test": config.test_fraction,
        },
        "seed": config.seed,
    }
