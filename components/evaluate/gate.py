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

    `baseline` is `baseline.compare`'s result: both models' metrics on the same test
    images; the new model must not fall below the baseline by more than `max_regression`.
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
        compare_with_baseline(baseline, config, results, reasons)
    learned = (metrics.get("baselines") or {}).get("logistic_regression")
    if config.min_gain_over_baseline and learned:
        gain = metrics["accuracy"] - learned["accuracy"]
        passed = gain >= config.min_gain_over_baseline - 1e-9
        results.append(
            {
                "metric": "gain_over_logistic_regression",
                "value": round(gain, 6),
                "threshold": config.min_gain_over_baseline,
                "passed": passed,
            }
        )
        if not passed:
            reasons.append(
                f"accuracy {metrics['accuracy']:.4f} beats the logistic-regression baseline "
                f"({learned['accuracy']:.4f} on {learned['features']}) by {gain:+.4f}, less "
                f"than min_gain_over_baseline {config.min_gain_over_baseline}: a linear "
                "classifier on the pixels does about as well"
            )
    return {
        "blessed": not reasons,
        "reasons": reasons,
        "checks": results,
        "baseline": baseline,
    }


def compare_with_baseline(
    baseline: dict[str, Any], config: EvaluateConfig, results: list, reasons: list[str]
) -> None:
    """The candidate must not be significantly worse than the baseline, by more than
    max_regression, on the same test images (the baseline's own test images with their
    labels unchanged, when it has any): the exact paired test of components/evaluate/paired.py.
    One image worse is chance, not a regression; a model that is really worse is refused
    even when the raw difference is inside the margin's noise."""
    from components.evaluate.paired import describe

    if not baseline.get("found"):
        return  # nothing published there yet: the thresholds alone decide (recorded)
    if baseline.get("classes_changed"):
        # the classes changed since the deployed version (validate records and stops such a
        # night unless validate.accept lets it through): nothing to pair, the thresholds decide
        results.append(
            {
                "metric": f"accuracy vs {baseline['model']}",
                "value": None,
                "threshold": None,
                "verdict": f"not compared: classes changed ({baseline['classes_changed']})",
                "passed": True,
            }
        )
        return
    if not baseline.get("comparable"):
        reasons.append(
            f"cannot compare with {baseline['model']}: every test image was in its train or "
            "val split; set prepare.keep_splits to it so its test images stay test images"
        )
        return
    where = (
        f"on {baseline['images']} known test images (its own, labels unchanged)"
        if baseline.get("gate_part") == "known"
        else f"on {baseline['images']} test images neither model trained on"
    )
    test = baseline["paired"]
    passed = test["verdict"] != "inferior"
    results.append(
        {
            "metric": f"accuracy vs {baseline['model']} (paired, {where})",
            "value": round(test["candidate_accuracy"], 6),
            "threshold": round(test["baseline_accuracy"] - config.max_regression, 6),
            "p_inferior": test["p_inferior"],
            "alpha": config.alpha,
            "verdict": test["verdict"],
            "passed": passed,
        }
    )
    if not passed:
        reasons.append(
            f"accuracy {test['candidate_accuracy']:.4f} is worse than {baseline['model']}'s "
            f"{test['baseline_accuracy']:.4f} by more than max_regression "
            f"{config.max_regression} {where}, significantly at alpha {config.alpha}: "
            + describe(test)
        )
