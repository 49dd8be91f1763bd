"""The evaluate stage's config."""

from __future__ import annotations

from dataclasses import dataclass

from components.common.config import StageConfig


@dataclass
class EvaluateConfig(StageConfig):
    """Test-split metrics and the thresholds a model must meet to be blessed."""

    section = "evaluate"

    min_accuracy: float = 0.9
    min_macro_f1: float = 0.0
    min_class_recall: float = 0.0  # the worst class's recall
    top_k: int = 3
    calibration_bins: int = 15
    batch_size: int = 256

    def validate(self) -> None:
        for key in ("min_accuracy", "min_macro_f1", "min_class_recall"):
            self.check(0.0 <= getattr(self, key) <= 1.0, key, "expected a fraction in 0..1")
        self.check(self.top_k >= 1, "top_k", "expected >= 1")
        self.check(2 <= self.calibration_bins <= 100, "calibration_bins", "expected 2..100")
        self.check(self.batch_size >= 1, "batch_size", "expected >= 1")
