"""The blessing gate: a model passes only when every configured threshold holds."""

from __future__ import annotations

from typing import Any

from components.evaluate.config import EvaluateConfig


def bless(metrics: dict[str, Any], config: EvaluateConfig) -> dict[str, Any]:
    """`blessing.json`: blessed true/false, each check with its value, and every refusal reason."""
    checks = [
        ("accuracy", metrics["accuracy"], config.min_accuracy),
        ("macro_f1", metrics["macro_f1"], config.min_macro_f1),
        ("worst_class_recall", metrics["worst_class_recall"], config.min_class_recall),
    ]
    results, reasons = [], []
    for name, value, threshold in checks:
        passed = value >= threshold
        results.append(
            {"metric": name, "value": round(value, 6), "threshold": threshold, "passed": passed}
        )
        if not passed:
            reasons.append(f"{name} {value:.4f} is below the threshold {threshold}")
    return {"blessed": not reasons, "reasons": reasons, "checks": results}
