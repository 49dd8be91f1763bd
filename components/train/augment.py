"""Augmentation presets: Keras preprocessing layers, run in tf.data, never inside the model.

Each preset is a factory returning the list of layers; `build` wraps them in a
Sequential that `data.training_dataset` maps over batches (on the CPU). Factors
follow Keras conventions: rotation as a fraction of a full turn, translation
and zoom as fractions of the image side.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

PRESETS: dict[str, Callable[[int], list]] = {}


def preset(name: str):
    def register(factory):
        if name in PRESETS:
            raise ValueError(f"augmentation preset {name!r} is registered twice")
        PRESETS[name] = factory
        return factory

    return register


@preset("none")
def _none(seed: int) -> list:
    return []


@preset("safe")
def _safe(seed: int) -> list:
    """No flips, small rotations: label-preserving for digits, text and traffic signs."""
    return [
        keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed),  # about +-11 degrees
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom((-0.1, 0.1), fill_mode="constant", seed=seed + 2),
    ]


@preset("light")
def _light(seed: int) -> list:
    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.05, seed=seed + 1),
        keras.layers.RandomZoom((-0.1, 0.1), seed=seed + 2),
    ]


@preset("medium")
def _medium(seed: int) -> list:
    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.1, seed=seed + 1),
        keras.layers.RandomZoom((-0.2, 0.2), seed=seed + 2),
        keras.layers.RandomTranslation(0.1, 0.1, seed=seed + 3),
        keras.layers.RandomContrast(0.2, seed=seed + 4),
        keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed + 5),
    ]


@preset("heavy")
def _heavy(seed: int) -> list:
    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=seed + 1),
        keras.layers.RandomErasing(
            factor=0.5, scale=(0.02, 0.2), value_range=(0, 255), seed=seed + 2
        ),
    ]


def build(name: str, seed: int) -> keras.Sequential | None:
    """The preset as one layer to call with `training=True`; None for `none`."""
    layers = PRESETS[name](seed)
    return keras.Sequential(layers, name=f"augment_{name}") if layers else None
