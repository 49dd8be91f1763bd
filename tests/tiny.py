"""A tiny prepared dataset of the real digits, for tests that need *a* dataset to train
on rather than one to learn the digits well from (resume, preemption, stage plumbing).

Three classes of 30 images at 16 px (63 train, 13 val, 14 test): an epoch of width-8
small_cnn is a fraction of a second, so such a test pays for its processes and its
checks, not for the data. Prepared in-process with one worker (a spawn pool for 90
images costs more than the decoding it spreads).
"""

from __future__ import annotations

from pathlib import Path

# what a test that only needs a model to train and save sets besides its own settings:
# the one-batch preflight check (about 5 s of CPU a run) and weight histograms (every
# epoch) are features of their own, tested in test_preflight.py and test_tensorboard.py
QUICK = {"width": 8, "preflight": "off", "tensorboard_histograms": False}


def quick_args(**extra) -> list[str]:
    """QUICK (and `extra`) as `--set key=value` arguments of a train command."""
    args = []
    for key, value in {**QUICK, **extra}.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["--set", f"{key}={text}"]
    return args


def tiny_digits(root: Path, classes=(0, 1, 7), per_class: int = 30, size: int = 16) -> Path:
    """`classes` of the real digits, `per_class` images each, prepared at `size` px."""
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run
    from tests.conftest import write_digit_images

    images = write_digit_images(
        root / "images", classes=classes, per_class=per_class, size=size, formats=("png",)
    )
    run(PrepareConfig(image_size=size, workers=1), images, root / "dataset")
    return root / "dataset"
