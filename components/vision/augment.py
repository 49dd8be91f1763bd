"""Augmentation: Keras preprocessing layers, run in tf.data on the CPU, never inside the model.

A policy is either a named preset or `custom`: a list of Keras layer names
with their arguments, from the config:

    augmentation: custom
    augmentation_layers:
      - RandomFlip: {mode: horizontal}
      - RandomShear: {x_factor: 0.1, y_factor: 0.1}
      - RandomErasing: {factor: 0.5}
      - MixUp: {alpha: 0.2}

Image layers change pixels; MixUp and CutMix also blend the one-hot labels of
two images in the batch, so they run on (images, labels) after the image
layers (label smoothing still applies, in the loss). Factors follow Keras
conventions: rotation as a fraction of a full turn, translation and zoom as
fractions of the image side. Every layer that takes `value_range` gets 0..255
(our pixels) and every layer that takes a `seed` gets one derived from the
run's seed, unless the config names them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras

from components.infra.errors import UserError
from components.infra.registration import registrar
from components.vision.autoaugment import AutoAugment
from components.vision.catalog import AUGMENTATION_PRESETS

PRESETS: dict[str, Callable[[int], list]] = {}

# The layers a custom policy may name: label-preserving image transforms...
IMAGE_LAYERS = (
    "RandomAffine",
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomContrast",
    "RandomBrightness",
    "RandomShear",
    "RandAugment",
    "RandomErasing",
    "AugMix",
    "RandomColorJitter",
    "RandomSaturation",
    "RandomHue",
    "RandomSharpness",
    "RandomGrayscale",
    "RandomGaussianBlur",
    "RandomPerspective",
    "RandomElasticTransform",
    "RandomInvert",
    "RandomPosterization",
    "Solarization",
    "Equalization",
    "AutoContrast",
    "AutoAugment",
)
# ...and the ones that mix two images and their labels.
MIXING_LAYERS = ("MixUp", "CutMix")


class RandomAffine(keras.layers.Layer):
    """Rotation, translation and zoom drawn per image and applied as ONE affine warp.

    The same ranges as RandomRotation + RandomTranslation + RandomZoom (rotation as a
    fraction of a full turn, translation and zoom as fractions of the side; a number
    f means -f..f, a pair is the range), but one interpolation instead of three:
    sharper images and a third of the cost in tf.data (benchmarks/train_throughput.py).
    """

    def __init__(
        self,
        rotation=0.0,
        translation=0.0,
        zoom=0.0,
        fill_mode="constant",
        fill_value=0.0,
        interpolation="bilinear",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rotation, self.translation, self.zoom = (
            _range(rotation, "rotation"),
            _range(translation, "translation"),
            _range(zoom, "zoom"),
        )
        if self.zoom[0] <= -1:
            raise ValueError(f"zoom must stay above -1, got {zoom!r}")
        self.fill_mode, self.fill_value, self.interpolation = fill_mode, fill_value, interpolation
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False

    def call(self, images, training=True):
        if not training:
            return images
        ops = keras.ops
        shape = ops.shape(images)
        batch = shape[0]
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def draw(bounds):
            return keras.random.uniform((batch,), bounds[0], bounds[1], seed=self.generator)

        angle = draw(self.rotation) * 2.0 * 3.141592653589793
        tx, ty = draw(self.translation) * width, draw(self.translation) * height
        scale = 1.0 / (1.0 + draw(self.zoom))  # zoom > 0 shows more of the scene (smaller)
        # output pixel -> input pixel: p_in = c + R(-angle) / scale * (p_out - c - t)
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        ox, oy = cx + tx, cy + ty
        transform = ops.stack(
            [
                cos,
                sin,
                cx - (cos * ox + sin * oy),
                -sin,
                cos,
                cy - (-sin * ox + cos * oy),
                ops.zeros_like(cos),
                ops.zeros_like(cos),
            ],
            axis=1,
        )
        return keras.ops.image.affine_transform(
            images,
            transform,
            interpolation=self.interpolation,
            fill_mode=self.fill_mode,
            fill_value=self.fill_value,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "translation": self.translation,
            "zoom": self.zoom,
            "fill_mode": self.fill_mode,
            "fill_value": self.fill_value,
            "interpolation": self.interpolation,
            "seed": self.seed,
        }

    def parts(self) -> list[RandomAffine]:
        """One layer per non-empty range (rotation, translation, zoom), for per-transform
        robustness checks."""
        found = []
        for key in ("rotation", "translation", "zoom"):
            if getattr(self, key) != (0.0, 0.0):
                config = {**self.get_config(), "rotation": 0.0, "translation": 0.0, "zoom": 0.0}
                config.pop("name", None)
                config.pop("trainable", None)
                config.pop("dtype", None)
                found.append(RandomAffine(**{**config, key: getattr(self, key)}))
        return found


OWN_LAYERS = {"RandomAffine": RandomAffine, "AutoAugment": AutoAugment}


def _range(value, name: str) -> tuple[float, float]:
    if isinstance(value, int | float):
        return (-float(value), float(value))
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"{name} range must be (low, high) with low <= high, got {value!r}")
    return (low, high)


preset = registrar(PRESETS, "augmentation preset", AUGMENTATION_PRESETS)


@preset("none")
def _none(seed: int) -> list:
    return []


@preset("safe")
def _safe(seed: int) -> list:
    """No flips, small rotations: label-preserving for digits, text and traffic signs.

    Rotation +-0.03 turn (about 11 degrees), shift and zoom +-10%, in one warp."""
    return [RandomAffine(rotation=0.03, translation=0.1, zoom=0.1, seed=seed)]


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
        keras.layers.RandomShear(0.1, 0.1, seed=seed + 4),
        keras.layers.RandomContrast(0.2, seed=seed + 5),
        keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed + 6),
    ]


@preset("autoaugment")
def _autoaugment(seed: int) -> list:
    """AutoAugment's ImageNet policy (25 sub-policies of two operations each); it
    inverts, solarizes and rotates up to 30 degrees: check the robustness report."""
    return [AutoAugment(seed=seed)]


@preset("heavy")
def _heavy(seed: int) -> list:
    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=seed + 1),
        keras.layers.RandomErasing(
            factor=0.5, scale=(0.02, 0.2), value_range=(0, 255), seed=seed + 2
        ),
        keras.layers.CutMix(factor=1.0, seed=seed + 3),
    ]


def parse_custom(entries: list, seed: int) -> list:
    """Config entries (`Name` or `{Name: {arg: value}}`) -> constructed layers.

    Raises UserError naming the entry when the name is unknown or Keras refuses
    the arguments, so a bad policy fails at config time, not mid-training.
    """
    layers = []
    allowed = (*IMAGE_LAYERS, *MIXING_LAYERS)
    for index, entry in enumerate(entries):
        where = f"train config augmentation_layers[{index}]"
        if isinstance(entry, str):
            name, kwargs = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            ((name, kwargs),) = entry.items()
            kwargs = dict(kwargs or {})
        else:
            raise UserError(
                f"{where}={entry!r} is invalid; expected a layer name or a one-key mapping "
                "{LayerName: {argument: value}}"
            )
        if name not in allowed:
            raise UserError(
                f"{where}: unknown augmentation layer {name!r}; expected one of {', '.join(allowed)}"
            )
        cls = OWN_LAYERS.get(name) or getattr(keras.layers, name)
        parameters = inspect.signature(cls.__init__).parameters
        if "value_range" in parameters:
            kwargs.setdefault("value_range", (0, 255))
        if "seed" in parameters:
            kwargs.setdefault("seed", seed + index)
        try:
            layers.append(cls(**kwargs))
        except (TypeError, ValueError) as error:
            raise UserError(
                f"{where}: keras.layers.{name}({_args(kwargs)}) failed: {error}"
            ) from None
    return layers


def _args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


class Augmenter:
    """Image layers, then label-mixing layers; call on a batch of (images, one-hot labels)."""

    def __init__(self, layers: list, name: str):
        self.name = name
        self.image_layers = [layer for layer in layers if not is_mixing(layer)]
        self.mixing_layers = [layer for layer in layers if is_mixing(layer)]
        self.images_only = (
            keras.Sequential(self.image_layers, name=f"augment_{name}")
            if self.image_layers
            else None
        )

    @property
    def layer_names(self) -> list[str]:
        return [type(layer).__name__ for layer in (*self.image_layers, *self.mixing_layers)]

    def __call__(self, images, labels, metadata=None):
        """(images, labels), or (images, labels, metadata) when metadata is given.

        MixUp and CutMix blend each row with one other row of the batch by a
        weight; metadata rides along with the labels, so a mixed image gets the
        same blend of both rows' metadata as of their labels."""
        if self.images_only is not None:
            images = self.images_only(images, training=True)
        for layer in self.mixing_layers:
            if metadata is None:
                mixed = layer({"images": images, "labels": labels}, training=True)
                images, labels = mixed["images"], mixed["labels"]
                continue
            classes = labels.shape[-1]
            both = keras.ops.concatenate([labels, keras.ops.cast(metadata, labels.dtype)], -1)
            mixed = layer({"images": images, "labels": both}, training=True)
            images = mixed["images"]
            labels, metadata = mixed["labels"][..., :classes], mixed["labels"][..., classes:]
        return (images, labels) if metadata is None else (images, labels, metadata)


def is_mixing(layer) -> bool:
    return type(layer).__name__ in MIXING_LAYERS


def build(name: str, seed: int, custom: list | None = None) -> Augmenter | None:
    """The policy as an `Augmenter`; None when it has no layers."""
    layers = parse_custom(custom or [], seed) if name == "custom" else PRESETS[name](seed)
    return Augmenter(layers, name) if layers else None


def is_augmentation(layer) -> bool:
    """A layer that only acts in training: any Random*, or one a policy may name."""
    name = type(layer).__name__
    return name.startswith("Random") or name in (*IMAGE_LAYERS, *MIXING_LAYERS)


# the trained model folder says which policy made it (evaluate's robustness check replays
# each transform); part of the model's contract, so evaluate need not read train's config
POLICY_FILE = "augmentation.json"


def save_policy(folder, name: str, layers: list) -> None:
    from pathlib import Path

    from components.infra.artifacts import write_json

    write_json(Path(folder) / POLICY_FILE, {"policy": name, "layers": list(layers)})


def load_policy(model_dir) -> tuple[str, list]:
    """(policy, custom layers) a model was trained with; ("none", []) when not recorded."""
    import json

    from components.infra import storage

    uri = str(model_dir)
    if uri.endswith(".keras"):
        uri = uri.rsplit("/", 1)[0] if "/" in uri else "."
    path = f"{uri.rstrip('/')}/{POLICY_FILE}"
    if not storage.exists(path):
        return "none", []
    policy = json.loads(storage.read_bytes(path))
    return str(policy.get("policy", "none")), list(policy.get("layers", []))
