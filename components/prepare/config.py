"""The prepare stage's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.infra.config import StageConfig
from components.vision.images import ImageLimits


@dataclass
class PrepareConfig(StageConfig):
    """How a labelled image source becomes a split, validated, sharded dataset."""

    section = "prepare"

    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # None: the median longer side of the source images, clamped to 32..224
    # (digits are 8x8 and get 32; photos get 224, the size backbones expect)
    image_size: int | None = None
    min_images_per_class: int = 5  # fewer cannot be split three ways and say anything
    small_classes: Literal["error", "drop"] = "error"
    max_rejected_fraction: float = 0.05
    min_side: int = ImageLimits.min_side
    max_pixels: int = ImageLimits.max_pixels  # Pillow's decompression-bomb threshold
    # exact: identical files; near: also pictures whose 64-bit dHash differs in at most
    # near_duplicate_distance bits (re-encoded, resized, lightly edited copies)
    dedupe: Literal["exact", "near", "off"] = "exact"
    near_duplicate_distance: int = 4
    kfold: int = 0  # >= 2: also write splits/kfold.csv (stratified, group-aware folds)
    conflicting_labels: Literal["drop", "keep"] = "drop"
    shard_size: int = 2048  # images per TFRecord shard
    workers: int = 0  # decode processes; 0: one per CPU
    # on a cluster: scan and encode in this many pods (dsl.ParallelFor), one plan between
    parallelism: int = 1
    # an earlier dataset (folder or gs://) or a registry reference <registry>/<model_name>
    # [/<version>]: every image it knew (by sha256) keeps its split; only new ones are split
    keep_splits: str = ""

    def validate(self) -> None:
        self.check_locations("keep_splits")
        self.check(0.0 < self.val_fraction < 1.0, "val_fraction", "expected 0 < value < 1")
        self.check(0.0 < self.test_fraction < 1.0, "test_fraction", "expected 0 < value < 1")
        self.check(
            self.val_fraction + self.test_fraction < 0.9,
            "test_fraction",
            f"val_fraction + test_fraction must leave at least 10% for training "
            f"(val_fraction={self.val_fraction})",
        )
        self.check(
            self.image_size is None or 8 <= self.image_size <= 1024,
            "image_size",
            "expected null (auto) or an integer in 8..1024",
        )
        self.check(self.min_images_per_class >= 3, "min_images_per_class", "expected >= 3")
        self.check(
            0.0 <= self.max_rejected_fraction <= 1.0,
            "max_rejected_fraction",
            "expected a fraction in 0..1",
        )
        self.check(self.min_side >= 1, "min_side", "expected >= 1")
        self.check(self.max_pixels >= 64, "max_pixels", "expected >= 64")
        self.check(self.shard_size >= 1, "shard_size", "expected >= 1")
        self.check(
            0 <= self.near_duplicate_distance <= 32,
            "near_duplicate_distance",
            "expected 0..32 bits of 64",
        )
        self.check(self.kfold == 0 or 2 <= self.kfold <= 20, "kfold", "expected 0 (off) or 2..20")
        self.check(1 <= self.parallelism <= 64, "parallelism", "expected 1 (one task) .. 64")
        self.check(self.workers >= 0, "workers", "expected >= 0 (0: one per CPU)")
