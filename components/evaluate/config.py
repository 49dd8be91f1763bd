"""The evaluate stage's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.infra.config import StageConfig


@dataclass
class EvaluateConfig(StageConfig):
    """Test-split metrics and the thresholds a model must meet to be blessed."""

    section = "evaluate"

    min_accuracy: float = 0.9
    min_macro_f1: float = 0.0
    min_class_recall: float = 0.0  # the worst class's recall
    baseline_model: str = ""  # model folder, .keras file or gs:// URI of the model to beat
    # The gate against the baseline (components/evaluate/gate.py; docs/design.md says why
    # these values): blessed only when the paired comparison SHOWS the candidate is not
    # worse by more than max_regression (accuracy points): the lower end of Tango's score
    # interval at 1 - 2 alpha must lie above -max_regression (non-inferiority at alpha).
    # 0.04 on ~270 images blesses retraining churn of up to ~12 images each way and refuses
    # 8 images net worse, with or without churn (benchmarks/gate_nights.py).
    max_regression: float = 0.04
    alpha: float = 0.05
    # decide on the baseline's own test images (labels unchanged) when there are at least
    # this many; fewer: `few_known_images` says what to do: `both` adds the test images
    # neither model trained on (said in the record), `refuse` refuses the candidate
    min_known_images: int = 100
    few_known_images: Literal["both", "refuse"] = "both"
    # a class whose recall on the gate's images drops by more than this (and significantly:
    # exact McNemar on its images at alpha) is refused, named with its images; 1.0: off
    max_class_regression: float = 0.15
    # macro F1 on the gate's images may drop by at most this (point estimate); 1.0: off
    max_macro_f1_regression: float = 0.05
    # refuse a model whose test accuracy does not beat the learned baseline (logistic
    # regression on 16x16 pixels, components/evaluate/baselines.py) by at least this; 0: off
    min_gain_over_baseline: float = 0.0
    top_k: int = 3
    label_error_confidence: float = 0.8  # list items the model contradicts at least this surely
    neighbours: int = 3  # nearest training images shown per misclassified test image
    gallery_per_class: int = 3
    # Grad-CAM overlays of the gallery's images and first-conv feature maps of one test
    # image per class in the report (components/vision/gradcam.py)
    explain: bool = True
    robustness_flag_drop: float = 0.25  # flag a transform that costs a class this much accuracy
    max_listed: int = 50  # rows per table in the report (the CSV/JSON files hold all)
    calibration_bins: int = 15
    # fit a temperature on val (components/evaluate/calibration.py); export bakes it into
    # every format, so `ece` is what ships and `ece_uncalibrated` is the raw model's
    calibrate: bool = True
    # bounded memory and time on large data: label errors and nearest neighbours look at a
    # stratified sample of this many train images (all of them when the split is smaller),
    # and robustness replays its transforms on at most this many test images
    max_train_analysis: int = 5000
    max_robustness_images: int = 2000
    batch_size: int = 256

    def validate(self) -> None:
        self.check_locations("baseline_model")
        for key in ("min_accuracy", "min_macro_f1", "min_class_recall"):
            self.check(0.0 <= getattr(self, key) <= 1.0, key, "expected a fraction in 0..1")
        for key in ("max_regression", "max_class_regression", "max_macro_f1_regression"):
            self.check(0.0 <= getattr(self, key) <= 1.0, key, "expected accuracy points in 0..1")
        self.check(self.min_known_images >= 1, "min_known_images", "expected >= 1")
        self.check(
            -1.0 <= self.min_gain_over_baseline <= 1.0,
            "min_gain_over_baseline",
            "expected accuracy points in -1..1 (0: off)",
        )
        self.check(0.0 < self.alpha < 0.5, "alpha", "expected a significance level in 0..0.5")
        self.check(self.top_k >= 1, "top_k", "expected >= 1")
        self.check(
            0.0 < self.label_error_confidence <= 1.0,
            "label_error_confidence",
            "expected 0 < value <= 1",
        )
        self.check(self.neighbours >= 1, "neighbours", "expected >= 1")
        self.check(self.gallery_per_class >= 1, "gallery_per_class", "expected >= 1")
        self.check(
            0.0 < self.robustness_flag_drop <= 1.0,
            "robustness_flag_drop",
            "expected 0 < value <= 1",
        )
        self.check(self.max_listed >= 1, "max_listed", "expected >= 1")
        self.check(2 <= self.calibration_bins <= 100, "calibration_bins", "expected 2..100")
        self.check(self.batch_size >= 1, "batch_size", "expected >= 1")
        self.check(self.max_train_analysis >= 1, "max_train_analysis", "expected >= 1")
        self.check(self.max_robustness_images >= 1, "max_robustness_images", "expected >= 1")
