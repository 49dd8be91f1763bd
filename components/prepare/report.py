"""The data report: counts, class balance per split, rejected files, duplicate groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.infra.html import figure_png
from components.infra.report import Report, Section, Table
from components.infra.report import write as write_report
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

    from components.infra import storage
    from components.vision.images import load_rgb

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


def lead(stats: dict[str, Any]) -> list[tuple[str, str]]:
    counts = stats["counts"]
    return [
        (
            "",
            f"Source {stats['source']}: {counts['listed']} image files, {counts['total']} "
            f"kept in {stats['num_classes']} classes, {counts['rejected']} rejected, "
            f"{counts['ignored']} other files ignored, {len(stats['duplicate_groups'])} "
            f"duplicate groups. Images stored at {stats['image_size']}x{stats['image_size']}. "
            f"Imbalance ratio (largest / smallest class): {stats['imbalance_ratio']}.",
        )
    ]


def kept_splits_section(stats: dict[str, Any]) -> Section | None:
    if "keep_splits" not in stats:
        return None
    kept = stats["keep_splits"]
    section = Section("Kept splits")
    if not kept["found"]:
        return section.say(f"Nothing published at {kept['source']} yet: a fresh split.")
    section.say(f"Images known to {kept['from']} kept the split they had there.")
    section.tables.append(
        Table(
            ["", *SPLITS],
            [
                ["kept", *(kept["kept"][s] for s in SPLITS)],
                ["new", *(kept["new"][s] for s in SPLITS)],
            ],
        )
    )
    return section


def listed_section(title: str, header: list[str], rows: list[list], limit: int) -> Section:
    return Section(title, tables=[Table(header, rows, limit=limit)], empty="None.")


def duplicate_rows(stats: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            g["kind"],
            len(g["uris"]),
            ", ".join(sorted(set(g["labels"]))),
            "yes" if g["conflicting"] else "no",
            " ; ".join(g["uris"]),
        ]
        for g in stats["duplicate_groups"]
    ]


def write(folder: Path, stats: dict[str, Any], limit: int = 200) -> None:
    """report.html and report.md, from one report model; long lists stop at `limit` rows
    (stats.json holds every one). The rows come from the helpers above."""
    samples = folder / "samples.png"
    report = Report("visionpipe data report", lead=lead(stats))
    sections = [
        Section(
            "Counts", tables=[Table(["class", *SPLITS, "total", "class weight"], count_rows(stats))]
        ),
        kept_splits_section(stats),
        Section(
            "Class balance",
            picture=balance_chart(stats),
            picture_alt="class balance per split",
            in_markdown=False,
        ),
        Section(
            "Samples",
            picture=samples.read_bytes() if samples.exists() else None,
            picture_alt="training images per class",
            empty="None.",
            in_markdown=False,
        ),
        listed_section(
            "Rejected files",
            ["file", "class", "reason"],
            [[r["uri"], r["label"], r["reason"]] for r in stats["rejected"]],
            limit,
        ),
        listed_section(
            "Ignored files",
            ["file", "reason"],
            [[r["uri"], r["reason"]] for r in stats["ignored"]],
            limit,
        ),
        listed_section(
            "Duplicate groups",
            ["kind", "copies", "labels", "conflict", "files"],
            duplicate_rows(stats),
            limit,
        ),
    ]
    for section in sections:
        if section is not None:
            report.add(section)
    write_report(report, folder)
