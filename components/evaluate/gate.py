"""The blessing gate: a model passes only when every configured threshold holds."""

from __future__ import annotations

from typing import Any

from components.evaluate.config import EvaluateConfig


def bless(
    metrics: dict[str, Any],
    config: EvaluateConfig,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`blessing.json`: blessed true/false, each check with its value, and every refusal reason.

    `baseline` holds the baseline model's metrics on the same test split; the
    new model must not fall below them by more than `max_regression`.
    """
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
    if baseline is not None:
        for name in ("accuracy", "macro_f1"):
            value, floor = metrics[name], baseline[name] - config.max_regression
            passed = value >= floor - 1e-12
            results.append(
                {
                    "metric": f"{name} vs baseline",
                    "value": round(value, 6),
                    "threshold": round(floor, 6),
                    "passed": passed,
                }
            )
            if not passed:
                reasons.append(
                    f"{name} {value:.4f} is worse than the baseline's {baseline[name]:.4f} "
                    f"by more than max_regression {config.max_regression}"
                )
    return {
        "blessed": not reasons,
        "reasons": reasons,
        "checks": results,
        "baseline": None
        if baseline is None
        else {k: baseline[k] for k in ("accuracy", "macro_f1", "model") if k in baseline},
    }
