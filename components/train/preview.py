"""augmentation_preview.png: originals and augmented versions, to judge the policy."""

from __future__ import annotations

from pathlib import Path


def write_augmentation_preview(
    path: Path,
    dataset: Path,
    size: int,
    augmenter,
    num_classes: int,
    count: int = 8,
    variants: int = 3,
) -> None:
    """Originals (first row) and augmented versions, so a person can judge the policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from components.infra.html import figure_png
    from components.vision.records import load_split_arrays

    images, labels, _ = load_split_arrays(dataset, "val", size)
    images = images[:count].astype(np.float32)
    one_hot = np.eye(num_classes, dtype=np.float32)[labels[:count]]
    rows = [images] + [
        np.asarray(augmenter(images, one_hot)[0]) if augmenter is not None else images
        for _ in range(variants)
    ]
    fig, axes = plt.subplots(
        len(rows), len(images), squeeze=False, figsize=(1.3 * len(images), 1.4 * len(rows))
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r][c].imshow(np.clip(image, 0, 255).astype(np.uint8))
            axes[r][c].axis("off")
        axes[r][0].set_title("original" if r == 0 else f"augmented {r}", fontsize=7, loc="left")
    path.write_bytes(figure_png(fig))
