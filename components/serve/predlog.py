"""Prediction logs: one JSON line per logged request image, in daily shards at a log
location (a folder, gs://, s3:// or minio://, through components/infra/storage.py).

  <location>/date=YYYY-MM-DD/<model>-<version>-<host>-<pid>-<n>.jsonl

Each shard is one flush of a background writer (at most `batch_records` records, or
what `flush_seconds` gathered), written whole: object stores cannot append. A request
only puts its records on a bounded queue (`queue_size`); when the queue is full, the
day's cap is reached or the record is not sampled, the record is dropped and counted,
never waited for. A store that fails loses that shard's records (counted, said on
stderr), never a request.
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
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from components.infra import storage


@dataclass(frozen=True)
class LogSettings:
    location: str
    sample_rate: float = 1.0  # the share of requests logged
    daily_cap: int = 100_000  # records per UTC day and server process, then dropped
    batch_records: int = 500  # records per shard at most
    flush_seconds: float = 2.0  # a shard at least this often while records arrive
    queue_size: int = 10_000  # records waiting for the writer; beyond it they are dropped

    def validate(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"--log-sample-rate {self.sample_rate}: expected 0..1")
        if self.daily_cap < 0 or self.batch_records < 1 or self.queue_size < 1:
            raise ValueError("--log-daily-cap must be >= 0")


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
    }


class PredictionLog:
    """The writer thread and its counters (`counts`: logged, written, sampled_out,
    capped, queue_full, failed_records, failed_shards)."""

    def __init__(self, settings: LogSettings, name: str, version: str, clock=None):
        settings.validate()
        self.settings, self.name, self.version = settings, name, version
        self.clock = clock or (lambda: datetime.now(UTC))
        self.counts: Counter[str] = Counter()
        self.queue: queue.Queue = queue.Queue(settings.queue_size)
        self.day, self.today = "", 0
        self.shards = 0
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
        for sha, size, result in zip(decoded.sha256, decoded.sizes, results, strict=True):
            with self.lock:
                day = now.strftime("%Y-%m-%d")
                if day != self.day:
                    self.day, self.today = day, 0
                if self.today >= self.settings.daily_cap:
                    self.counts["capped"] += 1
                    continue
                self.today += 1
            try:
                self.queue.put_nowait(record(self.name, self.version, sha, size, result, now))
                self.counts["logged"] += 1
            except queue.Full:
                self.counts["queue_full"] += 1

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

    def write(self, batch: list[dict]) -> None:
        by_day: dict[str, list[dict]] = {}
        for item in batch:
            by_day.setdefault(item["time"][:10], []).append(item)
        for day, items in by_day.items():
            self.shards += 1
            host = socket.gethostname().split(".")[0]
            name = f"{self.name}-{self.version}-{host}-{os.getpid()}-{self.shards:06d}.jsonl"
            uri = f"{self.settings.location.rstrip('/')}/date={day}/{name}"
            body = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items)
            try:
                storage.write_bytes(uri, body.encode())
                self.counts["written"] += len(items)
            except Exception as error:  # any store error: the request was answered already
                self.counts["failed_records"] += len(items)
                self.counts["failed_shards"] += 1
                text = " ".join(str(error).split())[:200]
                print(f"prediction log: {uri} not written ({text})", file=sys.stderr)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        self.stopping.set()
        self.thread.join(timeout)
