"""The blessing gate: a model passes only when every configured threshold holds, and,
against a deployed version, when the paired comparison shows it is not worse.

Against the deployed model (TFMA's change thresholds, a class being a slice): overall
accuracy by non-inferiority (components/evaluate/paired.py), each class's recall, and
macro F1, all on the same images. Every failed check is a reason that names what failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.evaluate.config import EvaluateConfig

LISTED_IMAGES = 20  # file names per class in a reason (blessing.json holds all of them)


def bless(
    metrics: dict[str, Any],
    config: EvaluateConfig,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`blessing.json`: blessed true/false, each check with its value, and every refusal reason.

    `baseline` is `baseline.compare`'s result: both models on the same test images, with
    `compare_predictions`' comparison of them."""
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
    gain_over_learned_baseline(metrics, config, results, reasons)
    return {
        "blessed": not reasons,
        "reasons": reasons,
        "checks": results,
        "baseline": baseline,
    }


def gain_over_learned_baseline(metrics, config: EvaluateConfig, results, reasons) -> None:
    learned = (metrics.get("baselines") or {}).get("logistic_regression")
    if not (config.min_gain_over_baseline and learned):
        return
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


def compare_predictions(
    labels, candidate, baseline, uris: list[str], classes: list[str], config: EvaluateConfig
) -> dict[str, Any]:
    """Both models' predicted classes on the same images (the gate's images) -> the
    comparison the gate decides on: `paired` (non-inferiority of accuracy), `per_class`
    (recall before and after, the images lost and gained, exact McNemar p(worse)) and
    `macro_f1` (before, after)."""
    from sklearn.metrics import f1_score

    from components.evaluate import paired

    labels, candidate, baseline = (np.asarray(a) for a in (labels, candidate, baseline))
    uris = list(uris)
    cand_right, base_right = candidate == labels, baseline == labels
    per_class = []
    for k in np.unique(labels):
        mine = labels == k
        lost = np.flatnonzero(mine & base_right & ~cand_right)
        gained = np.flatnonzero(mine & cand_right & ~base_right)
        before, after = float(base_right[mine].mean()), float(cand_right[mine].mean())
        p_worse = paired.p_worse(len(lost), len(gained))
        per_class.append(
            {
                "class": classes[int(k)],
                "images": int(mine.sum()),
                "recall_before": before,
                "recall_after": after,
                "drop": before - after,
                "p_worse_mcnemar_exact": p_worse,
                "refused": before - after > config.max_class_regression + 1e-12
                and p_worse < config.alpha,
                "lost": [uris[i] for i in lost],
                "gained": [uris[i] for i in gained],
            }
        )
    present = np.unique(labels).tolist()
    before, after = (
        float(f1_score(labels, p, average="macro", labels=present, zero_division=0))
        for p in (baseline, candidate)
    )
    return {
        "paired": paired.compare(cand_right, base_right, config.max_regression, config.alpha),
        "per_class": per_class,
        "macro_f1": {"before": before, "after": after, "drop": before - after},
    }


def decide(
    labels, candidate, baseline, uris, classes, config: EvaluateConfig, model="the deployed model"
) -> dict[str, Any]:
    """The blessing of `candidate` against `baseline` from predicted classes alone: the
    thresholds on the candidate's own metrics and the comparison on these images as the
    known part. What tests and benchmarks/gate_nights.py call; evaluate's run() measures
    real models through the same `compare_predictions` and `bless`."""
    from sklearn.metrics import f1_score, recall_score

    labels, candidate = np.asarray(labels), np.asarray(candidate)
    present = np.unique(labels).tolist()
    metrics = {
        "accuracy": float((candidate == labels).mean()),
        "macro_f1": float(
            f1_score(labels, candidate, average="macro", labels=present, zero_division=0)
        ),
        "worst_class_recall": float(
            recall_score(labels, candidate, average=None, labels=present, zero_division=0).min()
        ),
    }
    comparison = compare_predictions(labels, candidate, baseline, uris, classes, config)
    found = {
        "model": model,
        "found": True,
        "comparable": True,
        "gate_part": "known",
        "images": len(labels),
        **comparison,
    }
    return bless(metrics, config, found)


def where_compared(baseline: dict[str, Any]) -> str:
    part = baseline.get("gate_part")
    n = baseline["images"]
    if part == "known":
        return f"on {n} known test images (its own, labels unchanged)"
    if part == "both":
        return f"on {n} test images, known and new (too few known ones)"
    return f"on {n} test images neither model trained on"


def compare_with_baseline(
    baseline: dict[str, Any], config: EvaluateConfig, results: list, reasons: list[str]
) -> None:
    """The candidate against the baseline on the same test images: accuracy must be shown
    not worse by more than max_regression, no class may lose more than
    max_class_regression of its recall (significantly), macro F1 at most
    max_macro_f1_regression; each failure is a reason naming what failed."""
    if not baseline.get("found"):
        return  # nothing published there yet: the thresholds alone decide (recorded)
    name = baseline["model"]
    if baseline.get("classes_changed"):
        # the classes changed since the deployed version (validate records and stops such a
        # night unless validate.accept lets it through): nothing to pair, the thresholds decide
        results.append(
            {
                "metric": f"accuracy vs {name}",
                "value": None,
                "threshold": None,
                "verdict": f"not compared: classes changed ({baseline['classes_changed']})",
                "passed": True,
            }
        )
        return
    if not baseline.get("comparable"):
        reasons.append(
            f"cannot compare with {name}: every test image was in its train or "
            "val split; set prepare.keep_splits to it so its test images stay test images"
        )
        return
    few = baseline.get("too_few_known")
    if few and few.get("policy") == "refuse":
        reasons.append(
            f"only {few['known']} of today's test images are {name}'s own test images "
            f"(evaluate.min_known_images {few['min_known_images']}) and "
            "evaluate.few_known_images is refuse; keep its splits (prepare.keep_splits) or "
            "set few_known_images: both to add the new test images"
        )
    accuracy_check(baseline, config, results, reasons)
    class_checks(baseline, config, results, reasons)
    macro_f1_check(baseline, config, results, reasons)


def accuracy_check(baseline, config: EvaluateConfig, results, reasons) -> None:
    from components.evaluate.paired import describe

    name, where, test = baseline["model"], where_compared(baseline), baseline["paired"]
    low, high = test["difference_interval"]
    passed = test["verdict"] == "shown"
    results.append(
        {
            "metric": f"accuracy vs {name} (non-inferiority, {where})",
            "value": round(test["candidate_accuracy"], 6),
            "threshold": round(test["baseline_accuracy"] - config.max_regression, 6),
            "difference_interval": [round(low, 6), round(high, 6)],
            "p_noninferior": test["p_noninferior"],
            "p_worse_mcnemar_exact": test["p_worse_mcnemar_exact"],
            "smallest_detectable_regression": test["resolution"],
            "alpha": config.alpha,
            "verdict": test["verdict"],
            "passed": passed,
        }
    )
    if not test["can_detect_margin"]:
        smallest = test["resolution"]["accuracy_points"]
        reasons.append(
            f"these {test['images']} test images cannot detect a regression of "
            f"max_regression {config.max_regression}: the smallest they can tell from none "
            f"is {smallest:.4f}, so not even {name} itself could be shown within the margin; "
            "compare on more images (prepare.keep_splits, a larger test split) or raise "
            "evaluate.max_regression"
        )
    elif not passed:
        candidate, deployed = test["candidate_accuracy"], test["baseline_accuracy"]
        how = (
            f"is worse than {name}'s {deployed:.4f} by more than"
            if test["verdict"] == "inferior"
            else f"is not shown to be within {name}'s {deployed:.4f} minus"
        )
        reasons.append(
            f"accuracy {candidate:.4f} {how} max_regression {config.max_regression} {where} "
            f"(non-inferiority at alpha {config.alpha}): " + describe(test)
        )


def class_checks(baseline, config: EvaluateConfig, results, reasons) -> None:
    name = baseline["model"]
    for row in baseline.get("per_class", []):
        if row["drop"] <= 0 and not row["refused"]:
            continue  # recorded in per_class; the checks list the classes that lost
        results.append(
            {
                "metric": f"recall of class {row['class']!r} vs {name}",
                "value": round(row["recall_after"], 6),
                "threshold": round(row["recall_before"] - config.max_class_regression, 6),
                "p_worse_mcnemar_exact": row["p_worse_mcnemar_exact"],
                "passed": not row["refused"],
            }
        )
        if row["refused"]:
            shown = ", ".join(row["lost"][:LISTED_IMAGES])
            more = len(row["lost"]) - LISTED_IMAGES
            reasons.append(
                f"class {row['class']!r}: recall {row['recall_before']:.4f} -> "
                f"{row['recall_after']:.4f} on its {row['images']} test images against {name} "
                f"(a drop of {row['drop']:.4f}, beyond max_class_regression "
                f"{config.max_class_regression}; exact McNemar p(worse) "
                f"{row['p_worse_mcnemar_exact']:.3g}): {len(row['lost'])} lost ({shown}"
                + (f" and {more} more" if more > 0 else "")
                + f"), {len(row['gained'])} gained"
            )


def macro_f1_check(baseline, config: EvaluateConfig, results, reasons) -> None:
    found = baseline.get("macro_f1")
    if not found:
        return
    passed = found["drop"] <= config.max_macro_f1_regression + 1e-12
    results.append(
        {
            "metric": f"macro F1 vs {baseline['model']}",
            "value": round(found["after"], 6),
            "threshold": round(found["before"] - config.max_macro_f1_regression, 6),
            "passed": passed,
        }
    )
    if not passed:
        reasons.append(
            f"macro F1 {found['before']:.4f} -> {found['after']:.4f} against "
            f"{baseline['model']} {where_compared(baseline)}: a drop of {found['drop']:.4f}, "
            f"beyond max_macro_f1_regression {config.max_macro_f1_regression}"
        )
