"""The evaluation report (HTML with images inline, Markdown for the KFP UI) and its plots."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape as html_escape
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


@dataclass
class Extras:
    """Arrays the picture sections of the report draw from."""

    images: np.ndarray  # (N, S, S, 3) uint8 test images
    train_images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]
    uris: list[str]
    train_uris: list[str]
    gallery: dict[str, dict[str, list[int]]]
    label_errors: list[dict]
    order: np.ndarray  # misclassified test indices, most confident first
    limit: int


def thumb_grid(rows: list[list[tuple[np.ndarray, str, str]]], title: str) -> bytes:
    """A grid of thumbnails; each cell is (image, caption, caption colour)."""
    plt = _pyplot()
    width = max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(
        len(rows), width, figsize=(1.6 * width, 1.8 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        for c in range(width):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                image, caption, colour = row[c]
                ax.imshow(image)
                ax.set_title(caption, fontsize=7, color=colour)
    fig.suptitle(title, fontsize=9)
    return figure_png(fig)


def picture_sections(extras: Extras, errors: list[dict]) -> list[tuple[str, str]]:
    x, classes, probs = extras, extras.classes, extras.probs
    sections = []
    gallery_rows = []
    for name, picks in x.gallery.items():
        row = [
            (x.images[i], f"{name}→{classes[probs[i].argmax()]} {probs[i].max():.2f}", "red")
            for i in picks["confident_mistakes"]
        ]
        row += [
            (x.images[i], f"{name} ✓ {probs[i].max():.2f}", "green")
            for i in picks["unsure_correct"]
        ]
        if row:
            gallery_rows.append(row)
    sections.append(
        (
            "Error gallery",
            img_tag(
                thumb_grid(
                    gallery_rows,
                    "per class: most confident mistakes (red), least confident correct (green)",
                ),
                "error gallery",
            )
            if gallery_rows
            else "<p>No test images.</p>",
        )
    )
    neighbour_rows = []
    index_of = {uri: i for i, uri in enumerate(x.train_uris)}
    for test_index, error in zip(x.order[: x.limit], errors[: x.limit], strict=False):
        row = [(x.images[test_index], f"{error['true']}→{error['predicted']}", "red")]
        row += [
            (
                x.train_images[index_of[n["uri"]]],
                f"train {n['label']} {n['similarity']:.2f}",
                "black",
            )
            for n in error["nearest_train"]
        ]
        neighbour_rows.append(row)
    sections.append(
        (
            "Nearest training images",
            img_tag(
                thumb_grid(
                    neighbour_rows,
                    "misclassified test image, then its nearest training images "
                    "(penultimate-layer cosine similarity)",
                ),
                "nearest training images",
            )
            if neighbour_rows
            else "<p>No misclassified test images.</p>",
        )
    )
    label_rows = [
        [e["split"], e["uri"], e["given"], e["suggested"], e["p_suggested"], e["p_given"]]
        for e in x.label_errors[: x.limit]
    ]
    sections.append(
        (
            "Likely label errors",
            (
                f"<p>{len(x.label_errors)} items whose given label the model contradicts with high "
                "confidence (all in label_errors.json); review them before trusting the labels.</p>"
                + table_html(
                    ["split", "file", "given", "model says", "p(model)", "p(given)"], label_rows
                )
            )
            if label_rows
            else "<p>None above the confidence threshold.</p>",
        )
    )
    return sections


def robustness_section(robust: dict[str, Any]) -> str:
    rows = [
        [
            name,
            r["accuracy"],
            robust["clean_accuracy"] - r["accuracy"],
            ", ".join(r["flagged_classes"]) or "-",
        ]
        for name, r in robust["transforms"].items()
    ]
    flagged = [name for name, r in robust["transforms"].items() if r["flagged"]]
    note = (
        f'<p class="bad">Probably not label-preserving here: {", ".join(flagged)} '
        f"(some class loses at least {robust['flag_drop']:.0%} accuracy).</p>"
        if flagged
        else f"<p>No transform costs any class {robust['flag_drop']:.0%} accuracy.</p>"
    )
    return note + table_html(["transform", "accuracy", "drop", "flagged classes"], rows)


def slices_section(slices: dict[str, list[dict]]) -> str:
    if not slices:
        return "<p>The test manifest has no metadata columns to slice by.</p>"
    return "".join(
        f"<h3>{column}</h3>"
        + table_html(
            ["value", "count", "accuracy"],
            [[v["value"], v["count"], v["accuracy"]] for v in values],
        )
        for column, values in slices.items()
    )


def baseline_table(baseline: dict[str, Any] | None) -> tuple[str, list[str], list[list]]:
    """The candidate beside the baseline, on the same images: (note, header, rows)."""
    if not baseline:
        return "", [], []
    if not baseline.get("found"):
        return f"No model is published at {baseline['model']} yet: no comparison.", [], []
    if not baseline.get("comparable"):
        return f"{baseline['model']}: every test image was in its train or val split.", [], []
    note = (
        f"Candidate and {baseline['model']} on the {baseline['images']} test images neither "
        f"trained on ({baseline['excluded_seen_by_baseline']} left out: the baseline trained "
        "or validated on them)."
    )
    rows = [
        [name, value, baseline["baseline"][name], round(value - baseline["baseline"][name], 6)]
        for name, value in baseline["candidate"].items()
    ]
    return note, ["metric", "candidate", baseline["model"], "difference"], rows


def write(
    folder: Path,
    metrics: dict[str, Any],
    blessing: dict[str, Any],
    errors: list[dict],
    pairs: list[dict],
    confusion_png_bytes: bytes,
    extras: Extras | None = None,
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
    note, base_header, base_rows = baseline_table(blessing.get("baseline"))
    if note:
        gate += f"<h3>Against the baseline</h3><p>{html_escape(note)}</p>"
        gate += table_html(base_header, base_rows) if base_rows else ""
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
    if extras is not None:
        sections += picture_sections(extras, errors)
    if "slices" in metrics:
        sections.append(("Slices", slices_section(metrics["slices"])))
    if "robustness" in metrics:
        sections.append(("Robustness", robustness_section(metrics["robustness"])))
    (folder / "report.html").write_text(page("visionpipe evaluation report", sections))
    markdown = [
        "# visionpipe evaluation report",
        "",
        f"**{verdict}**" + ("" if blessing["blessed"] else ": " + "; ".join(blessing["reasons"])),
        "",
    ]
    if note:
        markdown += ["## Against the baseline", note, ""]
        markdown += [table_md(base_header, base_rows), ""] if base_rows else []
    markdown += [
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
    if "robustness" in metrics:
        robust = metrics["robustness"]
        markdown += [
            "",
            "## Robustness (test accuracy under each transform)",
            table_md(
                ["transform", "accuracy", "flagged classes"],
                [
                    [name, r["accuracy"], ", ".join(r["flagged_classes"]) or "-"]
                    for name, r in robust["transforms"].items()
                ],
            ),
        ]
    if extras is not None:
        markdown += [
            "",
            f"## Likely label errors ({len(extras.label_errors)})",
            table_md(
                ["split", "file", "given", "model says", "p(model)"],
                [
                    [e["split"], e["uri"], e["given"], e["suggested"], e["p_suggested"]]
                    for e in extras.label_errors[: extras.limit]
                ],
            )
            if extras.label_errors
            else "None.",
        ]
    markdown += ["", "Thumbnails, nearest training images and slices: report.html."]
    (folder / "report.md").write_text("\n".join(markdown) + "\n")
