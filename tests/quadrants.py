"""A data set whose answer is known: the class is decided only by a small patch in one
quadrant of the picture (Grad-CAM's peak must fall in that quadrant).

Each picture is grey noise with a plain orange square somewhere (a distractor that
decides nothing); one small square patch, whose two-colour pattern is the class,
sits at a random place inside a random quadrant. Pictures may be wider than high.
The quadrant of every picture is returned, so a test can check where the model looks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# each class's patch: two colours, split left/right; same mean brightness
PATTERNS = {
    "red_blue": ((220, 40, 40), (40, 40, 220)),
    "green_magenta": ((40, 200, 40), (200, 40, 200)),
    "yellow_cyan": ((220, 220, 40), (40, 200, 200)),
}


def quadrant_of(x: float, y: float, width: int, height: int) -> int:
    """0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    return int(y >= height / 2) * 2 + int(x >= width / 2)


def picture(rng, label: str, width: int, height: int, patch: int) -> tuple[np.ndarray, int]:
    image = rng.normal(120, 25, (height, width, 1)).repeat(3, axis=2)
    top, left = int(rng.integers(height - patch)), int(rng.integers(width - patch))
    image[top : top + patch, left : left + patch] = (230, 140, 30)
    quadrant = int(rng.integers(4))
    top = (quadrant // 2) * (height // 2) + int(rng.integers(2, height // 2 - patch - 1))
    left = (quadrant % 2) * (width // 2) + int(rng.integers(2, width // 2 - patch - 1))
    first, second = PATTERNS[label]
    image[top : top + patch, left : left + patch // 2] = first
    image[top : top + patch, left + patch // 2 : left + patch] = second
    return image.clip(0, 255).astype(np.uint8), quadrant


def write_quadrant_images(
    root: Path, per_class: int, width: int = 48, height: int = 48, patch: int = 8, seed: int = 0
) -> dict[str, int]:
    """Class folders of PNGs under `root`; returns {file path: quadrant of its patch}."""
    rng = np.random.default_rng(seed)
    quadrants = {}
    for label in PATTERNS:
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            array, quadrant = picture(rng, label, width, height, patch)
            path = root / label / f"{label}_{index:03d}.png"
            Image.fromarray(array).save(path)
            quadrants[str(path)] = quadrant
    return quadrants
