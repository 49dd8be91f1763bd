"""The validate stage's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from components.infra.config import StageConfig

# every check validate runs, in the order the record lists them
CHECKS = (
    "schema",
    "class_counts",
    "class_drift",
    "image_stats",
    "out_of_distribution",
    "label_agreement",
    "changed_labels",
)


@dataclass
class ValidateConfig(StageConfig):
    """The new data against the deployed version: thresholds, sample size and policy."""

    section = "validate"

    # the deployed version to compare with: <registry>/<model_name>[/<version>] or a prepared
    # dataset folder; empty: evaluate.baseline_model, then prepare.keep_splits, then
    # push.registry/push.model_name (the pipeline resolves it, components/validate/reference.py)
    reference: str = ""
    on_anomaly: Literal["stop", "warn"] = "stop"
    # a check that could not run (too few new images to test, no model or sample to ask) is
    # "skipped", never "pass": warn lets the night go on and says so (console, record,
    # summary); stop refuses it like an anomaly. k8s/base/run.yaml stops: unattended, a
    # night nobody checked must not publish (docs/design.md)
    on_skipped: Literal["warn", "stop"] = "warn"
    # nothing published at the reference: auto: the first night while the registry holds no
    # published model (a fresh local registry), refused when it holds others (a misspelled
    # name); allow: the first night (--first-night); refuse: always an error (scheduled)
    first_night: Literal["auto", "allow", "refuse"] = "auto"
    # checks whose anomalies are a deliberate change (a new class, a relabelling): recorded
    # as accepted, they do not stop the run
    accept: list[str] = field(default_factory=list)
    # an unchanged night (the same data fingerprint and resolved configs as the deployed
    # version) trains and publishes nothing; false (or `--force`) retrains anyway
    skip_unchanged: bool = True
    # significance of the statistical checks (class drift, out-of-distribution rate, label
    # agreement: Bonferroni over the classes); a value alone never flags, its test must too
    alpha: float = 0.01
    max_class_drop: float = 0.5  # a class that lost more than this share of its images
    max_class_linf: float = 0.1  # L-infinity distance of the new images' class shares
    max_image_stat_js: float = 0.25  # Jensen-Shannon distance of an image statistic
    min_new_images: int = 30  # fewer new images: the distribution checks say so and pass
    ood_quantile: float = 0.99  # of the reference's val images: what is "far"
    max_ood_excess: float = 0.05  # OOD rate above the reference's own test images' rate
    label_confidence: float = 0.5  # the deployed model "confidently" reads another class
    max_label_disagreement: float = 0.1  # share above what its own test confusion predicts
    max_changed_labels: int = 0  # known images (by sha256) that now carry another label
    neighbours: int = 5  # nearest reference train images an embedding distance averages
    max_images: int = 2000  # model-based checks: a stratified sample of at most this many
    batch_size: int = 256
    max_listed: int = 50  # files per anomaly in the report (anomalies.json lists all)

    def validate(self) -> None:
        self.check_locations("reference")
        unknown = sorted(set(self.accept) - set(CHECKS))
        self.check(not unknown, "accept", f"expected check names among {', '.join(CHECKS)}")
        self.check(0.0 < self.alpha < 0.5, "alpha", "expected a significance level in 0..0.5")
        for key in (
            "max_class_drop",
            "max_class_linf",
            "max_image_stat_js",
            "max_ood_excess",
            "max_label_disagreement",
        ):
            self.check(0.0 <= getattr(self, key) <= 1.0, key, "expected a fraction in 0..1")
        self.check(0.5 <= self.ood_quantile < 1.0, "ood_quantile", "expected 0.5 <= q < 1")
        self.check(
            0.0 < self.label_confidence <= 1.0, "label_confidence", "expected 0 < value <= 1"
        )
        for key in ("min_new_images", "neighbours", "max_images", "batch_size", "max_listed"):
            self.check(getattr(self, key) >= 1, key, "expected >= 1")
        self.check(self.max_changed_labels >= 0, "max_changed_labels", "expected >= 0")
