"""The train stage's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.common.config import StageConfig


@dataclass
class TrainConfig(StageConfig):
    """What model to build and how to fit it."""

    section = "train"

    model: str = "small_cnn"  # from scratch; or a keras.applications name, e.g. MobileNetV3Small
    width: int = 16  # small_cnn: filters of the first block (then 2x, 4x); 16 gives 73k weights
    weights: str = "none"  # backbones only: none | imagenet | path or gs:// to a weights file
    augmentation: str = "safe"  # preset; "safe" has no flips, so digits and text stay themselves
    epochs: int = 40
    batch_size: int = 32  # 40 steps per epoch on the 1,257 digits train images
    optimizer: Literal["adam", "adamw", "sgd", "lion"] = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    dropout: float = 0.3
    use_class_weights: bool = False  # weights from prepare's stats.json, for imbalanced data
    early_stopping_patience: int = 12
    reduce_lr_patience: int = 5
    shuffle_buffer: int = 4096
    # auto: mixed_float16 on CUDA GPUs with compute capability >= 7.0, float32 otherwise
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    seed: int = 42

    def validate(self) -> None:
        from components.train.augment import PRESETS
        from components.train.models import known_models

        self.check(
            self.model in known_models(), "model", f"expected one of {', '.join(known_models())}"
        )
        self.check(
            self.augmentation in PRESETS, "augmentation", f"expected one of {', '.join(PRESETS)}"
        )
        self.check(self.epochs >= 1, "epochs", "expected >= 1")
        self.check(4 <= self.width <= 512, "width", "expected 4..512")
        self.check(1 <= self.batch_size <= 4096, "batch_size", "expected 1..4096")
        self.check(0 < self.learning_rate < 1, "learning_rate", "expected 0 < value < 1")
        self.check(0 <= self.weight_decay < 1, "weight_decay", "expected 0 <= value < 1")
        self.check(0 <= self.label_smoothing < 1, "label_smoothing", "expected 0 <= value < 1")
        self.check(0 <= self.dropout < 1, "dropout", "expected 0 <= value < 1")
        self.check(self.early_stopping_patience >= 1, "early_stopping_patience", "expected >= 1")
        self.check(self.reduce_lr_patience >= 1, "reduce_lr_patience", "expected >= 1")
        self.check(self.shuffle_buffer >= 1, "shuffle_buffer", "expected >= 1")
        if self.model == "small_cnn":
            self.check(
                self.weights == "none",
                "weights",
                "the from-scratch small_cnn has no pretrained weights; use none",
            )
