"""Error analysis: galleries, nearest training images, likely label errors, slices.

Everything here works on arrays the stage already holds (probabilities,
labels, penultimate-layer embeddings), so the whole analysis of a few
thousand images takes seconds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np


def gallery(probs: np.ndarray, labels: np.ndarray, classes: list[str], per_class: int = 3):
    """Per class: the most confident mistakes and the least confident correct predictions."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    out: dict[str, dict[str, list[int]]] = {}
    for k, name in enumerate(classes):
        mine = np.flatnonzero(labels == k)
        wrong = mine[predicted[mine] != k]
        right = mine[predicted[mine] == k]
        out[name] = {
            "confident_mistakes": wrong[np.argsort(-confidence[wrong])][:per_class].tolist(),
            "unsure_correct": right[np.argsort(confidence[right])][:per_class].tolist(),
        }
    return out


def nearest_neighbours(
    query: np.ndarray, pool: np.ndarray, k: int, chunk: int = 256
) -> tuple[np.ndarray, ...]:
    """Indices and cosine similarities of the k nearest `pool` rows for each `query` row,
    `chunk` query rows at a time: the similarity matrix in memory is (chunk, P), never
    (Q, P). Embeddings may be float16; the arithmetic is float32."""
    if len(query) == 0 or len(pool) == 0:
        return np.zeros((len(query), 0), int), np.zeros((len(query), 0))
    p = pool.astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-12
    k = min(k, len(pool))
    indices, similarities = [], []
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk].astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
        similarity = q @ p.T  # (chunk, P)
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        indices.append(top)
        similarities.append(np.take_along_axis(similarity, top, axis=1))
    return np.concatenate(indices), np.concatenate(similarities)


def likely_label_errors(
    probs: np.ndarray, labels: np.ndarray, min_confidence: float, limit: int
) -> list[tuple[int, int, float, float]]:
    """Items whose given label the model contradicts with confidence >= `min_confidence`.

    Ranked by the model's confidence in the other class (highest first), as
    (index, suggested class, p(suggested), p(given)).
    """
    predicted = probs.argmax(axis=1)
    p_predicted = probs[np.arange(len(labels)), predicted]
    suspects = np.flatnonzero((predicted != labels) & (p_predicted >= min_confidence))
    suspects = suspects[np.argsort(-p_predicted[suspects])][:limit]
    return [
        (int(i), int(predicted[i]), float(p_predicted[i]), float(probs[i, labels[i]]))
        for i in suspects
    ]


def slice_metrics(
    rows: list[dict[str, str]], labels: np.ndarray, predicted: np.ndarray, ignore: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """Accuracy per value of every metadata column of the test manifest (e.g. camera, site)."""
    columns = [c for c in (rows[0].keys() if rows else []) if c not in ignore]
    out: dict[str, list[dict[str, Any]]] = {}
    for column in columns:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[row.get(column, "")].append(i)
        if len(groups) < 2 or len(groups) > 50:  # constant or id-like: no slice to show
            continue
        out[column] = sorted(
            (
                {
                    "value": value,
                    "count": len(members),
                    "accuracy": float((predicted[members] == labels[members]).mean()),
                }
                for value, members in groups.items()
            ),
            key=lambda s: s["accuracy"],
        )
    return out
