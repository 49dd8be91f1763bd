"""Robustness: test accuracy under each training transform, and a horizontal flip, per class.

A transform that drops one class's accuracy sharply is probably not
label-preserving for this domain (a flipped "b" is a "d"; a flipped
left-turn sign is a right-turn sign), and is flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


def transforms_for(
    augmentation: str, seed: int, custom: list | None = None
) -> dict[str, Transform]:
    """Each transform of the training policy on its own, plus a deterministic horizontal flip.

    A RandomAffine is split into its rotation, shift and zoom, AutoAugment into its
    operations that may not preserve the label (each at the policy's strongest
    magnitude); MixUp and CutMix are left out (they blend two images and their labels,
    so no single label is expected)."""
    from components.vision.augment import PRESETS, is_mixing, parse_custom

    if augmentation == "custom":
        layers = parse_custom(custom or [], seed)
    else:
        layers = PRESETS.get(augmentation, PRESETS["none"])(seed)
    found: dict[str, Transform] = {"horizontal_flip": lambda x: x[:, :, ::-1, :]}
    for layer in layers:
        if is_mixing(layer):
            continue
        # RandomAffine: rotation, shift and zoom apart; AutoAugment: the operations that
        # may change what an image shows (rotation, shear, inversion, solarization)
        for part in layer.parts() if hasattr(layer, "parts") else [layer]:
            found[_layer_label(part)] = lambda x, part=part: np.asarray(part(x, training=True))
    return found


def _layer_label(layer) -> str:
    if hasattr(layer, "label"):
        return layer.label
    config = layer.get_config()
    for key in ("factor", "mode", "height_factor", "rotation", "translation", "zoom"):
        if key in config and config[key] not in ((0.0, 0.0), 0, 0.0):
            return f"{type(layer).__name__}({key}={config[key]})"
    return type(layer).__name__


def robustness(
    predict: Callable[[np.ndarray, slice], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    transforms: dict[str, Transform],
    flag_drop: float,
    chunk: int = 256,
) -> dict[str, Any]:
    """Accuracy (overall and per class) under each transform; flags classes that collapse.

    Images are transformed and predicted `chunk` at a time (memory does not grow with
    the sample); `predict(x, where)` gets the slice of the images `x` are, so a model
    with a metadata input can pair each image with its own row."""

    def predicted_labels(transform: Transform | None) -> np.ndarray:
        parts = []
        for start in range(0, len(images), chunk):
            where = slice(start, start + chunk)
            x = images[where].astype(np.float32)
            parts.append(predict(x if transform is None else transform(x), where).argmax(axis=1))
        return np.concatenate(parts) if parts else labels

    def accuracy_per_class(transform: Transform | None) -> tuple[float, np.ndarray]:
        predicted = predicted_labels(transform)
        correct = predicted == labels
        per_class = np.array(
            [
                correct[labels == k].mean() if (labels == k).any() else np.nan
                for k in range(len(classes))
            ]
        )
        return float(correct.mean()), per_class

    clean, clean_per_class = accuracy_per_class(None)
    result: dict[str, Any] = {"clean_accuracy": clean, "flag_drop": flag_drop, "transforms": {}}
    for name, transform in transforms.items():
        accuracy, per_class = accuracy_per_class(transform)
        drops = clean_per_class - per_class
        flagged = [classes[k] for k in range(len(classes)) if drops[k] >= flag_drop]
        result["transforms"][name] = {
            "accuracy": accuracy,
            "per_class": {classes[k]: float(per_class[k]) for k in range(len(classes))},
            "flagged_classes": flagged,
            "flagged": bool(flagged),
        }
    return result
