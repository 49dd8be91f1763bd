"""One prediction: decoded images (and metadata) -> top-k, OOD score, embedding projection.
The server, its log and the load benchmark's in-process baseline all go through it."""

from __future__ import annotations

from typing import Any

import numpy as np

from components.serve.inputs import Decoded
from components.serve.model import Served


def answer(served: Served, decoded: Decoded, rows: np.ndarray | None, top_k: int) -> list[dict]:
    """Per image: {"top": [{"label", "probability"}...], "ood_score", "out_of_distribution",
    "projection"} (OOD fields None without a reference profile)."""
    probs, embeddings = served.predictor(decoded.images.astype(np.float32), rows)
    scores, far = (None, None) if served.scorer is None else served.scorer(probs, embeddings)
    projected = served.project(embeddings)
    k = min(top_k, len(served.labels))
    results = []
    for i, row in enumerate(probs):
        order = np.argsort(-row)[:k]
        results.append(
            {
                "top": [
                    {"label": served.labels[j], "probability": round(float(row[j]), 6)}
                    for j in order
                ],
                "ood_score": None if scores is None else round(float(scores[i]), 6),
                "out_of_distribution": None if far is None else bool(far[i]),
                "projection": np.round(projected[i], 5).tolist(),
            }
        )
    return results


def public(result: dict[str, Any]) -> dict[str, Any]:
    """What a client gets (the projection is for the log)."""
    return {k: v for k, v in result.items() if k != "projection"}
