"""`visionpipe history <registry>/<model>`: every recorded night side by side.

Reads the registry's append-only `history.jsonl` (written beside latest.json by
push for a published version, by evaluate and validate for a refused night;
components/infra/registry.py), prints one row per night, and writes
`history.html` and `history.png` (test accuracy and macro F1 over the nights,
data size on a second axis, refused nights marked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.infra.errors import UserError
from components.infra.registry import HISTORY, read_history

COLUMNS = ("date", "outcome", "version", "test_accuracy", "macro_f1", "data_total", "reason")


def rows_of(entries: list[dict[str, Any]]) -> list[dict[str, str]]:
    def number(value: Any, digits: int = 4) -> str:
        return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"

    rows = []
    for entry in entries:
        reasons = "; ".join(entry.get("reasons") or [])
        rows.append(
            {
                "date": str(entry.get("date", "?")),
                "outcome": "published" if entry.get("version") else "refused",
                "version": str(entry.get("version") or "-"),
                "test_accuracy": number(entry.get("test_accuracy")),
                "macro_f1": number(entry.get("macro_f1")),
                "data_total": str(entry.get("data_total") or "-"),
                "reason": reasons or ("latest" if entry.get("latest_moved") else "-"),
            }
        )
    return rows


def table(rows: list[dict[str, str]], width: int = 70) -> str:
    widths = {c: max(len(c), *(len(r[c][:width]) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    for row in rows:
        lines.append("  ".join(row[c][:width].ljust(widths[c]) for c in COLUMNS).rstrip())
    return "\n".join(lines)


def plot(entries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from components.infra.html import figure_png

    nights = list(range(1, len(entries) + 1))
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label in (("test_accuracy", "test accuracy"), ("macro_f1", "macro F1")):
        values = [e.get(key) if isinstance(e.get(key), int | float) else None for e in entries]
        ax.plot(nights, [v if v is not None else float("nan") for v in values], "o-", label=label)
    refused = [
        (n, e.get("test_accuracy"))
        for n, e in zip(nights, entries, strict=True)
        if not e.get("version")
    ]
    if refused:
        ax.scatter(
            [n for n, _ in refused],
            [v if isinstance(v, int | float) else 0.0 for _, v in refused],
            marker="x",
            s=80,
            color="red",
            label="refused",
            zorder=3,
        )
    ax.set_xlabel("night")
    ax.set_ylabel("test metric")
    ax.set_xticks(nights)
    sizes = [e.get("data_total") for e in entries]
    if any(isinstance(s, int) for s in sizes):
        other = ax.twinx()
        other.plot(nights, [s if isinstance(s, int) else float("nan") for s in sizes], "s--",
                   color="grey", label="images")  # fmt: skip
        other.set_ylabel("images in the dataset")
    ax.legend(loc="lower left")
    ax.set_title("visionpipe: one point per night")
    path.write_bytes(figure_png(fig))


def write_html(rows: list[dict[str, str]], reference: str, path: Path) -> None:
    from components.infra.report import Report, Section, Table, render_html

    report = Report(
        f"visionpipe history: {reference}",
        lead=[("", f"{len(rows)} nights recorded in {reference}/{HISTORY}")],
    )
    section = Section(
        "Nights", tables=[Table(list(COLUMNS), [[r[c] for c in COLUMNS] for r in rows])]
    )
    section.picture = (path.parent / "history.png").read_bytes()
    section.picture_alt = "test metrics and data size per night"
    report.add(section)
    path.write_text(render_html(report))


def history(reference: str, output: str | Path) -> dict[str, Any]:
    """Print and write the history of `reference` (`<registry>/<model_name>`)."""
    entries = read_history(reference)
    if not entries:
        raise UserError(
            f"no {HISTORY} under {reference}; pass <registry>/<model_name> of a registry a "
            "run has pushed to or refused a night in"
        )
    entries.sort(key=lambda e: str(e.get("date", "")))
    rows = rows_of(entries)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    plot(entries, folder / "history.png")
    write_html(rows, reference, folder / "history.html")
    print(table(rows))
    print(f"\n{len(rows)} nights; {folder / 'history.html'}, {folder / 'history.png'}")
    return {"nights": len(rows), "html": str(folder / "history.html")}
