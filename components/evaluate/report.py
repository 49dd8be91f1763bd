"""The evaluation report (HTML with images inline, Markdown for the KFP UI) and its plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from components.common.html import figure_png, img_tag, page, table_html, table_md


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(matrix: np.ndarray, classes: list[str]) -> bytes:
    plt = _pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * k + 2), max(3.5, 0.5 * k + 1.5)))
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if normalised[i, j] > 0.5 else "black",
                    )
    fig.colorbar(image, ax=ax, label="fraction of true class")
    ax.set_title("confusion matrix (counts; colour: row-normalised)")
    return figure_png(fig)


def reliability_png(reliability: list[dict]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    if reliability:
        ax.plot(
            [b["confidence"] for b in reliability],
            [b["accuracy"] for b in reliability],
            "o-",
            label="model",
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("reliability diagram")
    return figure_png(fig)


def write(
    folder: Path,
    metrics: dict[str, Any],
    blessing: dict[str, Any],
    errors: list[dict],
    pairs: list[dict],
    confusion_png_bytes: bytes,
) -> None:
    headline = [
        [name, metrics[name]]
        for name in (
            "accuracy",
            *[k for k in metrics if k.startswith("top_")],
            "macro_f1",
            "weighted_f1",
            "worst_class_recall",
            "log_loss",
            "ece",
            "roc_auc_ovr",
            "count",
        )
        if name in metrics
    ]
    per_class = [
        [name, v["precision"], v["recall"], v["f1"], v["support"]]
        for name, v in metrics["per_class"].items()
    ]
    per_class_header = ["class", "precision", "recall", "f1", "support"]
    error_rows = [
        [e["uri"], e["true"], e["predicted"], e["p_predicted"], e["p_true"]] for e in errors
    ]
    error_header = ["file", "true", "predicted", "p(predicted)", "p(true)"]
    pair_rows = [[p["true"], p["predicted"], p["count"]] for p in pairs]
    verdict = "blessed" if blessing["blessed"] else "NOT blessed"
    css = "good" if blessing["blessed"] else "bad"
    gate = f'<p class="{css}"><b>{verdict}</b></p>' + table_html(
        ["metric", "value", "threshold", "passed"],
        [[c["metric"], c["value"], c["threshold"], c["passed"]] for c in blessing["checks"]],
    )
    sections = [
        ("Gate", gate),
        ("Headline metrics", table_html(["metric", "value"], headline)),
        ("Per class", table_html(per_class_header, per_class)),
        ("Confusion matrix", img_tag(confusion_png_bytes, "confusion matrix")),
        (
            "Most confused pairs",
            table_html(["true", "predicted", "count"], pair_rows)
            if pair_rows
            else "<p>No mistakes.</p>",
        ),
        (
            "Calibration",
            f"<p>Expected calibration error: {metrics['ece']:.4f}</p>"
            + img_tag(reliability_png(metrics["reliability"]), "reliability diagram"),
        ),
        (
            "Misclassified test images",
            table_html(error_header, error_rows) if error_rows else "<p>None.</p>",
        ),
    ]
    (folder / "report.html").write_text(page("visionpipe evaluation report", sections))
    markdown = [
        "# visionpipe evaluation report",
        "",
        f"**{verdict}**" + ("" if blessing["blessed"] else ": " + "; ".join(blessing["reasons"])),
        "",
        "## Headline metrics",
        table_md(["metric", "value"], headline),
        "",
        "## Per class",
        table_md(per_class_header, per_class),
        "",
        "## Most confused pairs",
        table_md(["true", "predicted", "count"], pair_rows) if pair_rows else "No mistakes.",
        "",
        f"## Misclassified test images ({len(error_rows)})",
        table_md(error_header, error_rows[:50]) if error_rows else "None.",
    ]
    (folder / "report.md").write_text("\n".join(markdown) + "\n")
