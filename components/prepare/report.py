"""The data report: counts, class balance per split, rejected files, duplicate groups."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from components.common.html import figure_png, img_tag, page, table_html, table_md
from components.prepare.split import SPLITS


def balance_chart(stats: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = stats["classes"]
    per = stats["counts"]["per_class_and_split"]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classes) + 2), 3.5))
    positions = np.arange(len(classes))  # numeric x: class names like "0".."9" stay labels
    bottom = np.zeros(len(classes))
    for split in SPLITS:
        values = np.array([per[split][c] for c in classes])
        ax.bar(positions, values, bottom=bottom, label=split)
        bottom += values
    ax.set_xticks(positions, classes, rotation=90 if len(classes) > 12 else 0)
    ax.set_ylabel("images")
    ax.set_title("class balance per split")
    ax.legend()
    return figure_png(fig)


def sample_grid(
    path: Path, rows_by_split: dict[str, list[dict]], classes: list[str], per_class: int = 6
) -> None:
    """A grid of training images, one row per class, decoded as training will see them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from components.common import storage
    from components.common.images import load_rgb

    shown = classes[:30]
    fig, axes = plt.subplots(
        len(shown), per_class, figsize=(1.3 * per_class, 1.3 * len(shown)), squeeze=False
    )
    for r, name in enumerate(shown):
        picks = [row for row in rows_by_split["train"] if row["label"] == name][:per_class]
        for c in range(per_class):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(picks):
                ax.imshow(load_rgb(storage.read_bytes(picks[c]["uri"])))
        axes[r][0].set_title(name, fontsize=8, loc="left")
    path.write_bytes(figure_png(fig))


def count_rows(stats: dict[str, Any]) -> list[list[Any]]:
    per = stats["counts"]["per_class_and_split"]
    rows = [
        [
            c,
            *(per[s][c] for s in SPLITS),
            stats["counts"]["per_class"][c],
            stats["class_weights"][c],
        ]
        for c in stats["classes"]
    ]
    rows.append(
        ["total", *(stats["counts"]["per_split"][s] for s in SPLITS), stats["counts"]["total"], ""]
    )
    return rows


def write(folder: Path, stats: dict[str, Any]) -> None:
    header = ["class", *SPLITS, "total", "class weight"]
    rows = count_rows(stats)
    rejected_rows = [[r["uri"], r["label"], r["reason"]] for r in stats["rejected"]]
    ignored_rows = [[r["uri"], r["reason"]] for r in stats["ignored"]]
    duplicate_rows = [
        [
            g["kind"],
            len(g["uris"]),
            ", ".join(sorted(set(g["labels"]))),
            "yes" if g["conflicting"] else "no",
            " ; ".join(g["uris"]),
        ]
        for g in stats["duplicate_groups"]
    ]
    summary = (
        f"<p>Source <code>{html.escape(stats['source'])}</code>: {stats['counts']['listed']} image "
        f"files, {stats['counts']['total']} kept in {stats['num_classes']} classes, "
        f"{stats['counts']['rejected']} rejected, {stats['counts']['ignored']} other files ignored. "
        f"Images stored at {stats['image_size']}x{stats['image_size']}. "
        f"Imbalance ratio (largest / smallest class): {stats['imbalance_ratio']}.</p>"
    )
    sections = [
        ("Summary", summary),
        ("Counts", table_html(header, rows)),
        ("Class balance", img_tag(balance_chart(stats), "class balance per split")),
        (
            "Samples",
            img_tag((folder / "samples.png").read_bytes(), "training images per class")
            if (folder / "samples.png").exists()
            else "<p>None.</p>",
        ),
        (
            "Rejected files",
            table_html(["file", "class", "reason"], rejected_rows)
            if rejected_rows
            else "<p>None.</p>",
        ),
        (
            "Ignored files",
            table_html(["file", "reason"], ignored_rows) if ignored_rows else "<p>None.</p>",
        ),
        (
            "Duplicate groups",
            table_html(["kind", "copies", "labels", "conflict", "files"], duplicate_rows)
            if duplicate_rows
            else "<p>None.</p>",
        ),
    ]
    (folder / "report.html").write_text(page("visionpipe data report", sections))
    markdown = [
        "# visionpipe data report",
        "",
        f"{stats['counts']['total']} images kept in {stats['num_classes']} classes, "
        f"{stats['counts']['rejected']} rejected, {len(stats['duplicate_groups'])} duplicate groups, "
        f"image size {stats['image_size']}, imbalance ratio {stats['imbalance_ratio']}.",
        "",
        "## Counts",
        table_md(header, rows),
        "",
        "## Rejected files",
        table_md(["file", "class", "reason"], rejected_rows) if rejected_rows else "None.",
        "",
        "## Duplicate groups",
        table_md(["kind", "copies", "labels", "conflict", "files"], duplicate_rows)
        if duplicate_rows
        else "None.",
    ]
    (folder / "report.md").write_text("\n".join(markdown) + "\n")
