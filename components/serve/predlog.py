"""Prediction logs: one record per logged request image, in daily shards at a log
location (a folder, gs://, s3:// or minio://, through components/infra/storage.py).

  <location>/date=YYYY-MM-DD/<model>-<version>-<host>-<pid>-<run>-<n>.jsonl   (or .parquet)
  <location>/date=YYYY-MM-DD/<sha256>.<png|jpg|webp|...>              (--log-images)

Each shard is one flush of a background writer (at most `batch_records` records, or
what `flush_seconds` gathered), written whole: object stores cannot append, and a
Parquet file cannot be appended to either, so a Parquet shard is one flush too (the same
fields, typed by `parquet_schema`). <run> is random per log: a restarted container, whose
host name and pid are the same, never overwrites its predecessor's shards. With
`log_images` the request's image file is stored once per day under its sha256 beside
the records (created exclusively: a second server or request with the same image writes
nothing), and the record's `image` names it. `read_records` reads both formats back.

A request only puts its records on a bounded queue (`queue_size`); when the queue is
full, the day's cap is reached or the record is not sampled, the record is dropped and
counted, never waited for. A store that fails loses that shard's records (counted, said
on stderr), never a request.
"""

from __future__ import annotations

import json
import os
import queue
import random
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from components.infra import storage

MAX_REMEMBERED = 100_000  # image names remembered as stored (then asked of the store)


@dataclass(frozen=True)
class LogSettings:
    location: str
    sample_rate: float = 1.0  # the share of requests logged
    daily_cap: int = 100_000  # records per UTC day and server process, then dropped
    batch_records: int = 500  # records per shard at most
    flush_seconds: float = 2.0  # a shard at least this often while records arrive
    queue_size: int = 10_000  # records waiting for the writer; beyond it they are dropped
    log_format: str = "jsonl"  # jsonl | parquet
    log_images: bool = False  # also store each request image file beside its record
    # image bytes waiting for the writer at most: beyond it a record goes without its image
    # (counted images_dropped), so a slow bucket cannot hold 10,000 32 MB bodies in memory
    image_queue_bytes: int = 256 * 2**20

    def validate(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"--log-sample-rate {self.sample_rate}: expected 0..1")
        if self.daily_cap < 0 or self.batch_records < 1 or self.queue_size < 1:
            raise ValueError("--log-daily-cap must be >= 0")
        if self.log_format not in FORMATS:
            raise ValueError(f"--log-format {self.log_format}: expected jsonl or parquet")


FORMATS = ("jsonl", "parquet")
# the file signatures of the formats the server decodes -> the stored image's suffix
SIGNATURES = (
    (b"\x89PNG", ".png"),
    (b"\xff\xd8", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def image_name(sha256: str, blob: bytes) -> str:
    """`<sha256>.<suffix>` by the file's signature (WebP: RIFF....WEBP; else .img)."""
    if blob[:4] == b"RIFF" and blob[8:12] == b"WEBP":
        return sha256 + ".webp"
    suffix = next((s for magic, s in SIGNATURES if blob.startswith(magic)), ".img")
    return sha256 + suffix


def parquet_schema():
    """The records' fields as Parquet types (one schema for every shard, so shards with
    no OOD score or projection still read together)."""
    import pyarrow as pa

    top = pa.struct([("label", pa.string()), ("probability", pa.float64())])
    return pa.schema(
        [
            ("time", pa.string()),
            ("model", pa.string()),
            ("version", pa.string()),
            ("sha256", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("top", pa.list_(top)),
            ("ood_score", pa.float64()),
            ("out_of_distribution", pa.bool_()),
            ("projection", pa.list_(pa.float64())),
            ("image", pa.string()),
        ]
    )


def encode(items: list[dict], log_format: str) -> bytes:
    """A shard's bytes: JSON lines, or one Parquet file."""
    if log_format == "jsonl":
        return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(items, schema=parquet_schema()), buffer)
    return buffer.getvalue()


def read_records(location: str) -> list[dict]:
    """Every record under a log location, JSONL and Parquet shards alike, by shard name."""
    import io

    records: list[dict] = []
    for uri in storage.list_files(location):
        if uri.endswith(".jsonl"):
            text = storage.read_bytes(uri).decode()
            records += [json.loads(line) for line in text.splitlines() if line]
        elif uri.endswith(".parquet"):
            import pyarrow.parquet as pq

            records += pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pylist()
    return records


def record(name: str, version: str, sha256, size, result: dict, now: datetime) -> dict:
    width, height = size
    return {
        "time": now.isoformat(timespec="milliseconds"),
        "model": name,
        "version": version,
        "sha256": sha256,
        "width": width,
        "height": height,
        "top": result["top"],
        "ood_score": result["ood_score"],
        "out_of_distribution": result["out_of_distribution"],
        "projection": result["projection"],
        "image": None,  # the stored image's file name in the day's folder (log_images)
    }


class PredictionLog:
    """The writer thread and its counters (`counts`: logged, written, sampled_out,
    capped, queue_full, failed_records, failed_shards; with log_images images_written,
    images_present (already stored), images_dropped (over image_queue_bytes),
    failed_images)."""

    def __init__(self, settings: LogSettings, name: str, version: str, clock=None):
        settings.validate()
        self.settings, self.name, self.version = settings, name, version
        self.clock = clock or (lambda: datetime.now(UTC))
        self.counts: Counter[str] = Counter()
        self.queue: queue.Queue = queue.Queue(settings.queue_size)
        self.day, self.today = "", 0
        self.shards = 0
        self.run_id = uuid.uuid4().hex[:8]
        self.stored: set[tuple[str, str]] = set()  # (day folder, image) written or found
        self.image_bytes = 0  # of the images on the queue
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="prediction-log", daemon=True)
        self.thread.start()

    def offer(self, decoded, results: list[dict]) -> None:
        """Queue a request's records (sampled once per request); never blocks."""
        if self.settings.sample_rate < 1.0 and random.random() >= self.settings.sample_rate:
            self.counts["sampled_out"] += len(results)
            return
        now = self.clock()
        blobs = decoded.blobs if self.settings.log_images and decoded.blobs else None
        for n, (sha, size, result) in enumerate(
            zip(decoded.sha256, decoded.sizes, results, strict=True)
        ):
            with self.lock:
                day = now.strftime("%Y-%m-%d")
                if day != self.day:
                    self.day, self.today = day, 0
                if self.today >= self.settings.daily_cap:
                    self.counts["capped"] += 1
                    continue
                self.today += 1
            item = record(self.name, self.version, sha, size, result, now)
            blob = self.hold(blobs[n] if blobs is not None and sha else None)
            if blob:
                item["image"] = image_name(sha, blob)
            try:
                self.queue.put_nowait((item, blob))
                self.counts["logged"] += 1
            except queue.Full:
                self.release(blob)
                self.counts["queue_full"] += 1

    def hold(self, blob: bytes | None) -> bytes | None:
        """`blob` if the queued images' budget has room for it, else None (counted)."""
        if not blob:
            return None
        with self.lock:
            if self.image_bytes + len(blob) > self.settings.image_queue_bytes:
                self.counts["images_dropped"] += 1
                return None
            self.image_bytes += len(blob)
        return blob

    def release(self, blob: bytes | None) -> None:
        if blob:
            with self.lock:
                self.image_bytes -= len(blob)

    def run(self) -> None:
        while not (self.stopping.is_set() and self.queue.empty()):
            batch, deadline = [], time.monotonic() + self.settings.flush_seconds
            while len(batch) < self.settings.batch_records:
                left = deadline - time.monotonic()
                if left <= 0 or (self.stopping.is_set() and self.queue.empty()):
                    break
                try:
                    batch.append(self.queue.get(timeout=min(left, 0.1)))
                except queue.Empty:
                    continue
            if batch:
                self.write(batch)

    def write(self, batch: list[tuple[dict, bytes | None]]) -> None:
        by_day: dict[str, list[tuple[dict, bytes | None]]] = {}
        for item, blob in batch:
            by_day.setdefault(item["time"][:10], []).append((item, blob))
        for day, pairs in by_day.items():
            folder = f"{self.settings.location.rstrip('/')}/date={day}"
            self.store_images(folder, pairs)
            items = [item for item, _ in pairs]
            self.shards += 1
            host = socket.gethostname().split(".")[0]
            suffix = self.settings.log_format
            name = f"{self.name}-{self.version}-{host}-{os.getpid()}-{self.run_id}-{self.shards:06d}.{suffix}"
            uri = f"{folder}/{name}"
            try:
                storage.write_bytes(uri, encode(items, self.settings.log_format))
                self.counts["written"] += len(items)
            except Exception as error:  # any store error: the request was answered already
                self.counts["failed_records"] += len(items)
                self.counts["failed_shards"] += 1
                text = " ".join(str(error).split())[:200]
                print(f"prediction log: {uri} not written ({text})", file=sys.stderr)

    def store_images(self, folder: str, pairs: list[tuple[dict, bytes | None]]) -> None:
        """Each new image file once under its sha256 in the day's folder (created
        exclusively: one already there, from any server, is left as it is)."""
        for item, blob in pairs:
            if not blob or not item.get("image"):
                continue
            self.release(blob)
            key = (folder, item["image"])
            if key in self.stored:
                self.counts["images_present"] += 1
                continue
            try:
                created = storage.create_exclusive(f"{folder}/{item['image']}", blob)
            except Exception as error:  # the request was answered already
                self.counts["failed_images"] += 1
                text = " ".join(str(error).split())[:200]
                print(f"prediction log: image {item['image']} not stored ({text})", file=sys.stderr)
                continue
            self.counts["images_written" if created else "images_present"] += 1
            if len(self.stored) >= MAX_REMEMBERED:
                self.stored.clear()
            self.stored.add(key)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        self.stopping.set()
        self.thread.join(timeout)
