"""Proof that an exported file computes what the Keras model computes, and how fast."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from components.vision.runtimes import Predictor


def parity(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement and max |difference| against Keras, and accuracy, on the same images."""
    agree = reference.argmax(axis=1) == candidate.argmax(axis=1)
    return {
        "count": int(len(labels)),
        "top1_agreement": float(agree.mean()) if len(agree) else 1.0,
        "disagreements": int((~agree).sum()),
        "max_abs_diff": float(np.abs(reference - candidate).max()) if len(agree) else 0.0,
        "accuracy": float((candidate.argmax(axis=1) == labels).mean()) if len(labels) else 0.0,
    }


def latency(
    predictor: Predictor, image: np.ndarray, runs: int, row: np.ndarray | None = None
) -> dict[str, float]:
    """Batch-1 latency in milliseconds after two warm-up calls: the median, p90 and the
    interquartile range (p25, p75: the spread `push.serving: auto` weighs differences by)."""
    batch = image[None].astype(np.float32)
    rows = None if row is None else row[None]
    for _ in range(2):
        predictor(batch, rows)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor(batch, rows)
        samples.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": round(float(np.median(samples)), 4),
        "p90_ms": round(float(np.percentile(samples, 90)), 4),
        "p25_ms": round(float(np.percentile(samples, 25)), 4),
        "p75_ms": round(float(np.percentile(samples, 75)), 4),
        "runs": runs,
    }


def throughput(
    predictor: Predictor,
    images: np.ndarray,
    batch_size: int = 32,
    rounds: int = 3,
    rows: np.ndarray | None = None,
) -> float:
    """Images per second at a fixed batch size (best of `rounds` calls on one batch)."""
    batch = np.resize(images, (batch_size, *images.shape[1:])).astype(np.float32)
    meta = None if rows is None else np.resize(rows, (batch_size, *rows.shape[1:]))
    predictor(batch, meta)  # warm-up; also sizes the interpreter for this batch
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        predictor(batch, meta)
        best = min(best, time.perf_counter() - start)
    return round(batch_size / best, 2)
