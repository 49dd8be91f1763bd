"""Classification metrics from probabilities, with scikit-learn doing the counting."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int):
    """ECE with equal-width confidence bins; also returns the per-bin table for a diagram."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if not inside.any():
            continue
        accuracy, mean_conf = float(correct[inside].mean()), float(confidence[inside].mean())
        ece += inside.mean() * abs(accuracy - mean_conf)
        table.append(
            {
                "low": float(low),
                "high": float(high),
                "count": int(inside.sum()),
                "accuracy": accuracy,
                "confidence": mean_conf,
            }
        )
    return float(ece), table


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, classes: list[str], top_k: int, bins: int
) -> dict[str, Any]:
    """Everything `metrics.json` holds, computed from (N, K) probabilities and (N,) labels."""
    k = len(classes)
    predicted = probs.argmax(axis=1)
    index = list(range(k))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=index, zero_division=0
    )
    ece, reliability = expected_calibration_error(probs, labels, bins)
    top_k = min(top_k, k)
    result: dict[str, Any] = {
        "count": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        # by hand: scikit-learn's top_k_accuracy_score wants 1-d scores for two classes
        f"top_{top_k}_accuracy": float(
            (np.argsort(-probs, axis=1)[:, :top_k] == labels[:, None]).any(axis=1).mean()
        ),
        "macro_f1": float(
            skm.f1_score(labels, predicted, average="macro", labels=index, zero_division=0)
        ),
        "weighted_f1": float(
            skm.f1_score(labels, predicted, average="weighted", labels=index, zero_division=0)
        ),
        "log_loss": float(skm.log_loss(labels, np.clip(probs, 1e-7, 1.0), labels=index)),
        "ece": ece,
        "worst_class_recall": float(recall[support > 0].min()) if (support > 0).any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "reliability": reliability,
    }
    present = np.unique(labels)
    if len(present) == k:
        scores = probs / probs.sum(axis=1, keepdims=True)
        result["roc_auc_ovr"] = float(
            skm.roc_auc_score(
                labels, scores if k > 2 else scores[:, 1], multi_class="ovr", labels=index
            )
        )
    return result


def confusion(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    return skm.confusion_matrix(labels, predicted, labels=list(range(k)))


def most_confused_pairs(matrix: np.ndarray, classes: list[str], limit: int = 10) -> list[dict]:
    """Off-diagonal cells, largest first: (true, predicted, count)."""
    pairs = [
        {"true": classes[i], "predicted": classes[j], "count": int(matrix[i, j])}
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and matrix[i, j] > 0
    ]
    return sorted(pairs, key=lambda p: (-p["count"], p["true"], p["predicted"]))[:limit]
