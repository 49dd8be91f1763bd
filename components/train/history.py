"""history.csv (one row per epoch, a resumed epoch's last row kept) and history.png."""

from __future__ import annotations

from pathlib import Path


def read_history(path: Path) -> list[dict[str, float]]:
    import csv

    if not path.exists():
        return []
    with open(path) as handle:
        rows = [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]
    by_epoch = {int(row["epoch"]): row for row in rows}  # a resumed epoch: keep the last row
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    import csv

    if not history:
        return
    columns = sorted({key for row in history for key in row}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows({**row, "epoch": int(row["epoch"])} for row in history)


def plot_history(
    history: list[dict[str, float]], path: Path, fine_tune_start: int | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from components.infra.html import figure_png

    if not history:
        return
    epochs = [int(h["epoch"]) + 1 for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h.get(metric) for h in history], label=f"train {metric}")
        ax.plot(epochs, [h.get(f"val_{metric}") for h in history], label=f"val {metric}")
        if fine_tune_start:
            ax.axvline(fine_tune_start - 0.5, color="grey", linestyle=":", label="fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    path.write_bytes(figure_png(fig))
