"""Prepare fanned out over N pods (`prepare.parallelism`), as the cluster pipeline runs it.

  scan(shard i of N)   list the source; inspect (read, hash, decode) items i, i+N, ...
  plan                 gather the N scans in listing order; take the global decisions on
                       the metadata only (rejects, duplicates, groups, small classes, the
                       stratified split) exactly as single-task prepare does; write the
                       dataset folder but its shards, and the list of shards to encode
  encode(worker j)     encode shards j, j+N, ... of that list (the TFRecord files)
  merge                the plan's folder and every encoded shard: the dataset

Each step is the function single-task prepare (components/prepare/core.py) runs, on
part of the work, so the result is the same dataset: the same manifests and stats, byte
for byte, and the same examples in the same order in every shard file (byte-identical
within one process; protobuf may order an Example's feature map differently in another
process, as it would for two single-task runs). tests/test_prepare_fanout.py and
tests/test_pipeline_fanout.py (a kfp.local run of the fan-out) compare them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from components.infra import progress
from components.infra.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.infra.errors import UserError
from components.prepare.config import PrepareConfig
from components.prepare.core import (
    STAGE,
    inspect_listing,
    list_and_log,
    plan_splits,
    write_plan,
    write_records,
)
from components.prepare.scan import Inspected, worker_count
from components.prepare.shards import shard_count
from components.prepare.split import SPLITS
from components.vision.images import ImageLimits
from components.vision.sources import Listing

SCAN_FILE = "inspected.jsonl"
JOBS_FILE = "encode_jobs.json"


def limits_of(config: PrepareConfig) -> ImageLimits:
    return ImageLimits(min_side=config.min_side, max_pixels=config.max_pixels)


def scan(config: PrepareConfig, source: str, shard: int, shards: int, output: str | Path) -> int:
    """Inspect this shard's items (every `shards`-th from `shard`); write them as JSONL
    with their position in the listing. Returns how many."""
    listing = list_and_log(source)
    part = Listing(listing.source, listing.root, listing.items[shard::shards])
    inspected = inspect_listing(part, limits_of(config), worker_count(config.workers))
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / SCAN_FILE, "w") as handle:
        for offset, found in enumerate(inspected):
            record = dataclasses.asdict(found)
            record["thumb"] = found.thumb.hex()
            handle.write(json.dumps({"index": shard + offset * shards, **record}) + "\n")
    progress.log(STAGE, f"scan {shard + 1}/{shards}: {len(inspected)} of {len(listing.items)}")
    return len(inspected)


def load_scans(folders: list[str | Path], expected: int) -> list[Inspected]:
    """The scans' records in listing order; refuses a missing or doubled item."""
    found: dict[int, Inspected] = {}
    for folder in folders:
        with open(Path(folder) / SCAN_FILE) as handle:
            for line in handle:
                record = json.loads(line)
                index = record.pop("index")
                record["thumb"] = bytes.fromhex(record["thumb"])
                if index in found:
                    raise UserError(f"listing item {index} was scanned twice; re-run prepare")
                found[index] = Inspected(**record)
    if sorted(found) != list(range(expected)):
        raise UserError(
            f"the scans hold {len(found)} of the {expected} listed items: the source changed "
            "while prepare ran; run it again"
        )
    return [found[i] for i in range(expected)]


def plan(
    config: PrepareConfig, source: str, scans: list[str | Path], output: str | Path
) -> dict[str, Any]:
    """The global decisions and the dataset folder without its shards, plus the shard
    list (JOBS_FILE) the encode tasks share out."""
    listing = list_and_log(source)
    decided = plan_splits(config, listing, load_scans(scans, len(listing.items)))
    with atomic_dir(output) as work:
        stats = write_plan(work, config, listing, decided)
        jobs = [
            {"split": split, "shard": k}
            for split in SPLITS
            for k in range(shard_count(len(decided.rows_by_split[split]), config.shard_size))
        ]
        write_json(work / JOBS_FILE, {"image_size": decided.image_size, "jobs": jobs})
    return stats


def planned_rows(plan_dir: Path) -> dict[str, list[dict]]:
    """The manifests of a plan as the shard writer takes them (label_index from classes)."""
    import csv

    classes = read_json(plan_dir / "classes.json")
    index = {name: i for i, name in enumerate(classes)}
    rows: dict[str, list[dict]] = {}
    for split in SPLITS:
        with open(plan_dir / "splits" / f"{split}.csv", newline="") as handle:
            rows[split] = [{**r, "label_index": index[r["label"]]} for r in csv.DictReader(handle)]
    return rows


def encode(
    config: PrepareConfig, plan_dir: str | Path, worker: int, workers: int, output: str | Path
) -> list[str]:
    """Encode this worker's shards of the plan (every `workers`-th job from `worker`)."""
    plan_dir = Path(plan_dir)
    jobs = read_json(plan_dir / JOBS_FILE)
    mine = [job for i, job in enumerate(jobs["jobs"]) if i % workers == worker]
    rows = planned_rows(plan_dir)
    written: list[str] = []
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        only = {job["shard"] for job in mine if job["split"] == split}
        if only:
            written += write_records(
                out,
                split,
                rows[split],
                jobs["image_size"],
                limits_of(config),
                config.shard_size,
                worker_count(config.workers),
                only,
            )
    progress.log(STAGE, f"encode {worker + 1}/{workers}: {len(written)} shard(s)")
    return written


def merge(
    config: PrepareConfig,
    source: str,
    plan_dir: str | Path,
    encoded: list[str | Path],
    output: str | Path,
) -> dict[str, Any]:
    """The dataset: the plan's folder with every encoded shard; refuses a missing shard."""
    plan_dir = Path(plan_dir)
    jobs = read_json(plan_dir / JOBS_FILE)
    record = StageRecord(STAGE, config, {"data": str(source)})
    with atomic_dir(output) as work:
        for item in plan_dir.iterdir():
            if item.name in (JOBS_FILE, "config.json"):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy)(item, work / item.name)
        (work / "tfrecords").mkdir(exist_ok=True)
        for folder in encoded:
            for shard in sorted((Path(folder) / "tfrecords").glob("*.tfrecord")):
                shutil.copy(shard, work / "tfrecords" / shard.name)
        present = {p.name for p in (work / "tfrecords").glob("*.tfrecord")}
        for job in jobs["jobs"]:
            total = sum(1 for j in jobs["jobs"] if j["split"] == job["split"])
            name = f"{job['split']}-{job['shard']:05d}-of-{total:05d}.tfrecord"
            if name not in present and job_has_rows(plan_dir, job, config.shard_size):
                raise UserError(f"shard {name} was not encoded; re-run the pipeline")
        record.write(work, parallelism=len(encoded))
    stats = read_json(Path(output) / "stats.json")
    progress.log(STAGE, f"merged {len(present)} shards from {len(encoded)} encode tasks")
    return stats


def job_has_rows(plan_dir: Path, job: dict, shard_size: int) -> bool:
    with open(plan_dir / "splits" / f"{job['split']}.csv") as handle:
        rows = sum(1 for _ in handle) - 1
    return rows > job["shard"] * shard_size
