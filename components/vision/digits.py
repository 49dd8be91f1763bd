"""`builtin:digits`: the UCI hand-written digits that scikit-learn ships, as PNG class folders.

1,797 grayscale 8x8 images in 10 classes (digit 0-9), 16 gray levels. They
are written once under a cache folder and then read exactly like a user's
folder of class sub-folders, so the built-in data exercises the real path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from components.infra.artifacts import atomic_dir
from components.infra.errors import UserError

BUILTIN_PREFIX = "builtin:"
DATASETS = ("digits",)
EXPECTED_COUNT = 1797


def cache_root() -> Path:
    base = os.environ.get("VISIONPIPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "visionpipe"
    )
    return Path(base)


def is_builtin(source: str) -> bool:
    return str(source).startswith(BUILTIN_PREFIX)


def check_builtin(source: str) -> str:
    """The name of a built-in dataset; an unknown one is refused with the list."""
    name = str(source)[len(BUILTIN_PREFIX) :]
    if name not in DATASETS:
        raise UserError(
            f"unknown built-in dataset {source!r}; available: "
            + ", ".join(BUILTIN_PREFIX + d for d in DATASETS)
        )
    return name


def resolve_builtin(source: str) -> str:
    """The local folder that stands for `builtin:NAME`, written on first use."""
    check_builtin(source)
    folder = cache_root() / "digits-png"
    if not (folder / ".complete").exists():
        try:
            write_digits(folder)
        except OSError:
            # another process may have finished writing the same folder first
            if not (folder / ".complete").exists():
                raise
    return str(folder)


def write_digits(folder: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 gray levels -> 0..255, ink white on black as in the original scans
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    with atomic_dir(folder) as work:
        for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
            class_dir = work / str(int(label))
            class_dir.mkdir(exist_ok=True)
            Image.fromarray(image, "L").save(class_dir / f"digit_{index:04d}.png")
        (work / ".complete").write_text(f"{len(pixels)}\n")
