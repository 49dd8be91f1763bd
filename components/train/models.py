"""Model builders, keras APIs only (they also run under KERAS_BACKEND=jax).

Every model takes float images in 0..255 of shape (B, S, S, 3) and carries
its own input normalisation, so the exported graph needs nothing outside it.
The layer named `embedding` is the image representation (GlobalAveragePooling);
the output layer `probabilities` is a float32 softmax. A model with metadata
columns has a second input, `metadata` (B, M) float32 (see
components/vision/metadata.py), concatenated with the image features before
the head.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import keras
import numpy as np

from components.infra.registration import registrar
from components.infra.storage import read_bytes
from components.vision.catalog import BACKBONES, FROM_SCRATCH_MODELS, known_models
from components.vision.layers import CaffePreprocess

FROM_SCRATCH: dict[str, Callable] = {}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


from_scratch = registrar(FROM_SCRATCH, "model", FROM_SCRATCH_MODELS)


def preprocessing(kind: str) -> list:
    if kind == "builtin":
        return []
    if kind == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_minus1_1")]
    if kind == "torch":
        return [
            keras.layers.Rescaling(1 / 255.0, name="to_0_1"),
            keras.layers.Normalization(
                mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_norm"
            ),
        ]
    if kind == "caffe":
        return [CaffePreprocess(name="caffe_preprocess")]
    raise ValueError(f"unknown preprocessing kind {kind!r}")


def head(features, num_classes: int, dropout: float):
    """GlobalAveragePooling -> Dropout -> Dense softmax (float32 even under mixed precision)."""
    x = keras.layers.GlobalAveragePooling2D(name="embedding")(features)
    return classifier(x, num_classes, dropout)


def classifier(x, num_classes: int, dropout: float):
    """Dropout -> Dense softmax, float32 even under mixed precision."""
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)


def batchnorm_momentum(steps_per_epoch: int) -> float:
    """BatchNorm momentum whose moving statistics settle within about one epoch.

    Keras' default 0.99 needs hundreds of steps; a small dataset gives a few per
    epoch, and a model whose moving statistics lag its weights predicts one class
    at inference (seen on digits: 0.1 val accuracy at 0.99 train accuracy).
    1 - 4/steps keeps 0.99 for large data, gives 0.9 for 40 steps, 0.5 at least.
    """
    return float(min(0.99, max(0.5, 1.0 - 4.0 / max(1, steps_per_epoch))))


@from_scratch("small_cnn")
def small_cnn(
    image_size: int, num_classes: int, dropout: float, width: int = 32, bn_momentum: float = 0.9
) -> keras.Model:
    """Three blocks of two 3x3 convs (width, 2*width, 4*width filters) with BatchNorm."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="to_0_1")(inputs)
    for block, filters in enumerate((width, 2 * width, 4 * width)):
        for conv in range(2):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}"
            )(x)
            # see batchnorm_momentum: the moving statistics must converge in a few epochs
            x = keras.layers.BatchNormalization(
                momentum=bn_momentum, name=f"block{block}_bn{conv}"
            )(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < 2:
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
            x = keras.layers.SpatialDropout2D(dropout / 3, name=f"block{block}_drop")(x)
    return keras.Model(inputs, head(x, num_classes, dropout), name="small_cnn")


@from_scratch("resnet_mini")
def resnet_mini(
    image_size: int, num_classes: int, dropout: float, width: int = 32, bn_momentum: float = 0.9
) -> keras.Model:
    """A small ResNet: a stem, then three stages of two residual blocks (width, 2x, 4x)."""

    def conv_bn(x, filters, stride, name, relu=True):
        x = keras.layers.Conv2D(
            filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    def block(x, filters, stride, name):
        shortcut = x
        y = conv_bn(x, filters, stride, f"{name}_a")
        y = conv_bn(y, filters, 1, f"{name}_b", relu=False)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(
                filters, 1, strides=stride, use_bias=False, name=f"{name}_proj"
            )(shortcut)
            shortcut = keras.layers.BatchNormalization(
                momentum=bn_momentum, name=f"{name}_proj_bn"
            )(shortcut)
        return keras.layers.ReLU(name=f"{name}_out")(
            keras.layers.Add(name=f"{name}_add")([y, shortcut])
        )

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="to_0_1")(inputs)
    x = conv_bn(x, width, 1, "stem")
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for index in range(2):
            stride = 2 if stage > 0 and index == 0 else 1
            x = block(x, filters, stride, f"stage{stage}_block{index}")
    return keras.Model(inputs, head(x, num_classes, dropout), name="resnet_mini")


def backbone_model(
    name: str,
    image_size: int,
    num_classes: int,
    dropout: float,
    weights: str,
    bn_momentum: float | None = None,
) -> keras.Model:
    """A keras.applications backbone (no top) with its own preprocessing and our head."""
    constructor = getattr(keras.applications, name)
    kind = BACKBONES[name]
    kwargs = {
        "include_top": False,
        "input_shape": (image_size, image_size, 3),
        "weights": "imagenet" if weights == "imagenet" else None,
    }
    # EfficientNet (v1) always rescales inside and has no such argument
    if kind == "builtin" and name.startswith(("MobileNetV3", "EfficientNetV2")):
        kwargs["include_preprocessing"] = True
    backbone = constructor(**kwargs)
    backbone.name = "backbone"
    if bn_momentum is not None:
        # same reason as small_cnn: a backbone trained from scratch on a small set
        # must have moving statistics that settle within the few steps it gets
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    if weights not in ("none", "imagenet"):
        suffix = ".weights.h5" if weights.endswith(".weights.h5") else os.path.splitext(weights)[1]
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "backbone" + suffix)
            with open(local, "wb") as handle:
                handle.write(read_bytes(weights))
            backbone.load_weights(local)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for layer in preprocessing(kind):
        x = layer(x)
    # pretrained: BatchNorm (and the backbone's own dropout) stay in inference mode in
    # both stages, so fine-tuning on a small set cannot wreck the learned statistics
    x = backbone(x, training=False) if weights != "none" else backbone(x)
    return keras.Model(inputs, head(x, num_classes, dropout), name=f"{name}_classifier")


def is_pretrained(name: str, weights: str) -> bool:
    """Models that train in two stages: a keras.applications backbone with learned weights."""
    return name in BACKBONES and weights != "none"


def set_backbone_trainable(model: keras.Model, top_layers: int | None) -> int:
    """Freeze the backbone (top_layers None), or unfreeze its top N layers (0: all).

    BatchNormalization layers stay frozen either way. Returns the number of
    trainable weights (scalars) of the whole model afterwards.
    """
    backbone = model.get_layer("backbone")
    if top_layers is None:
        backbone.trainable = False
    else:
        backbone.trainable = True
        layers = backbone.layers
        cut = 0 if top_layers == 0 else max(0, len(layers) - top_layers)
        for index, layer in enumerate(layers):
            frozen = index < cut or isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = not frozen
    return trainable_count(model)


def trainable_count(model: keras.Model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def with_metadata(
    model: keras.Model, metadata_size: int, num_classes: int, dropout: float
) -> keras.Model:
    """Two inputs (functional API): image features and a Dense view of the metadata,
    concatenated, then Dropout -> Dense softmax. Unchanged when there is no metadata."""
    if not metadata_size:
        return model
    image_features = model.get_layer("embedding").output
    metadata = keras.Input((metadata_size,), name="metadata")
    units = int(min(64, max(8, 2 * metadata_size)))
    m = keras.layers.Dense(units, activation="relu", name="metadata_dense")(metadata)
    x = keras.layers.Concatenate(name="image_and_metadata")([image_features, m])
    outputs = classifier(x, num_classes, dropout)
    return keras.Model([model.inputs[0], metadata], outputs, name=f"{model.name}_metadata")


def build_model(
    name: str,
    image_size: int,
    num_classes: int,
    dropout: float,
    weights: str = "none",
    width: int = 32,
    bn_momentum: float = 0.9,
    metadata_size: int = 0,
) -> keras.Model:
    if name in FROM_SCRATCH:
        model = FROM_SCRATCH[name](image_size, num_classes, dropout, width, bn_momentum)
    elif name in BACKBONES:
        # pretrained statistics are kept as they are; only from-scratch backbones adapt
        momentum = bn_momentum if weights == "none" else None
        model = backbone_model(name, image_size, num_classes, dropout, weights, momentum)
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(known_models())}")
    return with_metadata(model, metadata_size, num_classes, dropout)


def image_size_of(model: keras.Model) -> int | None:
    """The side S of the model's (S, S, 3) image input (its first input)."""
    return model.inputs[0].shape[1]
