"""What each stage logs to MLflow, read from the files the stage has just written
(so the tracked numbers are the reported ones, byte for byte)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.infra.tracking import StageLog, flatten, history_metrics, numeric


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def resolved(folder: Path, given: dict) -> dict[str, Any]:
    """The stage's resolved config (every default filled in), as its config.json recorded
    it; what was given when there is none."""
    return flatten("", _json(Path(folder) / "config.json").get("config") or given, {})


def _scalars(prefix: str, data: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in flatten(prefix, data, {}).items() if numeric(v)}


def validate_log(config: dict, validation: Path, dataset: Path) -> StageLog:
    """The validation as validate wrote it, stopped or not: data counts, and each check
    under its own name (components/validate/checks.py: Check)."""
    anomalies = _json(validation / "anomalies.json")
    counts = _json(dataset / "stats.json").get("counts", {})
    metrics = {
        "data.total": counts.get("total"),
        "data.rejected": counts.get("rejected"),
        **{f"data.{split}": n for split, n in (counts.get("per_split") or {}).items()},
        **{f"data.class.{c}": n for c, n in (counts.get("per_class") or {}).items()},
        **_scalars("validation.counts", anomalies.get("counts") or {}),
        "validation.anomalies": len(anomalies.get("anomalies") or []),
    }
    tags = {
        "validation.anomalies": "; ".join(map(str, anomalies.get("anomalies") or [])) or "none",
        "validation.reference": str(anomalies.get("reference_label") or "none"),
        "validation.decision": str(anomalies.get("decision") or "none"),
    }
    if anomalies.get("accepted"):
        tags["validation.accepted"] = "; ".join(map(str, anomalies["accepted"]))
    verdicts = []
    for check in anomalies.get("checks") or []:
        found_metrics, found_tags = check_log(check)
        metrics.update(found_metrics)
        tags.update(found_tags)
        verdicts.extend(k for k in found_tags if k.endswith(".verdict"))
    return StageLog(
        params=resolved(validation, config),
        metrics=metrics,
        tags=tags,
        artifacts=[
            validation / "report.html",
            validation / "anomalies.json",
            dataset / "report.html",
        ],
        parent_metrics=("data.total", "data.train", "data.val", "data.test"),
        parent_tags=("validation.anomalies", "validation.decision", *verdicts),
    )


def check_log(check: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """One validate check as metrics and tags under `validation.<check>.`: its value (a
    number; a mapping's numbers by their keys; a list by its length, as schema's added and
    removed classes), its threshold when a number, its anomaly count; its verdict (pass,
    anomaly, skipped), why it was skipped, and whether its anomalies were accepted."""
    prefix = f"validation.{check['check']}"
    value, threshold = check.get("value"), check.get("threshold")
    metrics: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, inner in flatten(f"{prefix}.value", value, {}).items():
            metrics[key] = len(inner) if isinstance(inner, list) else inner
    elif isinstance(value, list):
        metrics[f"{prefix}.value"] = len(value)
    else:
        metrics[f"{prefix}.value"] = value
    if numeric(threshold):
        metrics[f"{prefix}.threshold"] = threshold
    metrics[f"{prefix}.anomalies"] = len(check.get("anomalies") or [])
    tags = {f"{prefix}.verdict": str(check.get("verdict") or "none")}
    if check.get("reason"):
        tags[f"{prefix}.reason"] = str(check["reason"])
    if check.get("accepted"):
        tags[f"{prefix}.accepted"] = "true"
    return {k: v for k, v in metrics.items() if numeric(v)}, tags


def train_log(config: dict, model: Path) -> StageLog:
    metrics: dict[str, Any] = dict(history_metrics(model / "history.csv"))
    summary = _json(model / "metrics.json")
    for key in ("best_epoch", "epochs_run"):
        if numeric(summary.get(key)):
            metrics[key] = summary[key]
    return StageLog(
        params=resolved(model, config),
        metrics=metrics,
        tags={},
        artifacts=[
            model / "history.png",
            model / "history.csv",
            model / "augmentation_preview.png",
            model / "summary.txt",
            model / "preflight.json",
        ],
        parent_metrics=("loss", "val_loss", "val_accuracy", "best_epoch"),
    )


def evaluate_log(config: dict, evaluation: Path) -> StageLog:
    metrics_file = _json(evaluation / "metrics.json")
    blessing = _json(evaluation / "blessing.json")
    headline = {
        f"test_{k}": metrics_file[k]
        for k in (
            "accuracy",
            "top_3_accuracy",
            "macro_f1",
            "weighted_f1",
            "log_loss",
            "ece",
            "ece_uncalibrated",
            "worst_class_recall",
            "roc_auc_ovr",
            "temperature",
        )
        if numeric(metrics_file.get(k))
    }
    per_class = {
        f"test.class.{name}.{key}": value
        for name, values in (metrics_file.get("per_class") or {}).items()
        for key, value in values.items()
        if numeric(value)
    }
    reasons = blessing.get("reasons") or []
    tags = {
        "blessed": str(bool(blessing.get("blessed"))).lower(),
        "blessing.reasons": "; ".join(reasons) if reasons else "none",
    }
    return StageLog(
        params=resolved(evaluation, config),
        metrics={
            **headline,
            **per_class,
            **_scalars("test.robustness", metrics_file.get("robustness") or {}),
        },
        tags=tags,
        artifacts=[
            evaluation / "report.html",
            evaluation / "confusion_matrix.png",
            evaluation / "metrics.json",
            evaluation / "blessing.json",
            evaluation / "errors.csv",
        ],
        parent_metrics=tuple(headline),
        parent_tags=("blessed", "blessing.reasons"),
    )


def export_log(config: dict, exported: Path) -> StageLog:
    parity = _json(exported / "parity.json")
    benchmark = _json(exported / "benchmark.json")
    metrics: dict[str, Any] = {}
    for fmt, values in parity.items():
        if isinstance(values, dict):
            for key in ("top1_agreement", "accuracy", "accuracy_drop", "max_abs_diff"):
                if numeric(values.get(key)):
                    metrics[f"parity.{fmt}.{key}"] = values[key]
    for fmt, values in benchmark.items():
        if isinstance(values, dict):
            for key in ("median_ms", "p90_ms", "batch32_images_per_s", "size_bytes"):
                if numeric(values.get(key)):
                    metrics[f"latency.{fmt}.{key}"] = values[key]
    passed = all(v.get("passed", True) for v in parity.values() if isinstance(v, dict))
    return StageLog(
        params=resolved(exported, config),
        metrics=metrics,
        tags={"export.parity_passed": str(passed).lower()},
        artifacts=[
            exported / "model_card.md",
            exported / "parity.json",
            exported / "benchmark.json",
        ],
        parent_tags=("export.parity_passed",),
    )


def push_log(config: dict, published: dict[str, Any], manifest: Path | None) -> StageLog:
    tags = {
        "published_version": str(published.get("version", "")),
        "published_uri": str(published.get("uri", "")),
        "latest_moved": str(bool(published.get("latest_moved"))).lower(),
    }
    return StageLog(
        params=flatten("", config, {}),
        metrics={"published.files": published.get("files")},
        tags=tags if published.get("pushed") else {"published_version": "none"},
        artifacts=[manifest] if manifest else [],
        parent_tags=("published_version", "published_uri"),
    )
