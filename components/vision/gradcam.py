"""Where the model looks: Grad-CAM (Selvaraju et al., 2017) and first-layer feature maps.

For a class c and a convolutional feature map A (h, w, k), Grad-CAM weights each
channel by the spatial mean of d y_c / d A (y_c: the class's pre-softmax score) and
keeps the positive part of the weighted sum: relu(sum_k alpha_k A_k). The map is
resized to the image's own size (the model sees the whole picture resized to a
square, so the map spans the whole picture) and scaled to 0..1.

Everything but the gradient is Keras ops; the gradient is TensorFlow's
(tf.GradientTape: the stages run on TensorFlow; another backend is refused
in one line). It works for the from-scratch models
and every keras.applications backbone (the backbone is a nested model: a layer
inside it is reached by re-wiring the outer model around a two-output copy of it),
for models with a metadata input, and for averaged ensembles (one map per member,
averaged). The target layer is the last feature map of side >= MIN_SIDE (the last
convolutional one, unless the net pools it smaller than that), or any layer named.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from components.infra.errors import UserError
from components.vision.models import ensemble_members

MIN_SIDE = 4  # a 2x2 or 1x1 map cannot say where in the picture the evidence is
OUTPUT_LAYER = "probabilities"  # visionpipe models' softmax Dense (see train/models.py)


@dataclass
class Target:
    """A feature map to explain: `layer` is in `owner` (the model, or a nested backbone)."""

    layer: object
    owner: object  # None: the layer is in the outer model itself

    @property
    def name(self) -> str:
        prefix = f"{self.owner.name}/" if self.owner is not None else ""
        return prefix + self.layer.name


def spatial_side(layer) -> int | None:
    """The height of a layer's (B, H, W, C) output; None for any other output."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # a layer used twice has no single output
        return None
    if len(shape) != 4 or shape[1] is None or shape[3] is None:
        return None
    return int(shape[1])


def candidate_targets(model) -> list[Target]:
    """Every layer with a spatial output, in the order the model runs them; a nested
    backbone contributes its own layers in its place."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += [Target(inside, layer) for inside in layer.layers if spatial_side(inside)]
        elif spatial_side(layer):
            found.append(Target(layer, None))
    skip = (keras.layers.InputLayer, keras.layers.ZeroPadding2D)  # the map before, re-framed
    return [t for t in found if not isinstance(t.layer, skip)]


def choose_target(model, name: str = "") -> Target:
    """The layer named (outer model first, then inside a nested backbone; "backbone/x"
    also works), or the last feature map of side >= MIN_SIDE."""
    candidates = candidate_targets(model)
    if name:
        for target in candidates:
            if name in (target.name, target.layer.name):
                return target
        names = ", ".join(t.name for t in candidates[-8:])
        raise UserError(
            f"explain: the model has no layer {name!r} with a spatial (B, H, W, C) output; "
            f"its last ones are {names}: pass one of them to --layer, or leave it out"
        )
    for target in reversed(candidates):
        if spatial_side(target.layer) >= MIN_SIDE:
            return target
    if candidates:
        return candidates[-1]
    raise UserError(
        f"explain: model {model.name!r} has no convolutional feature map to explain "
        "(no layer with a (B, H, W, C) output)"
    )


def explaining_model(model, target: Target):
    """A model from the inputs to [the target feature map, the penultimate features (what
    the softmax Dense takes), the probabilities]. The model's graph is re-wired around
    its own layers (weights shared): a nested backbone is replaced by a copy with a second
    output, the target map inside it."""
    import keras

    dense = output_dense(model)
    inner = target.owner
    two = (
        None if inner is None else keras.Model(inner.inputs, [target.layer.output, *inner.outputs])
    )
    stash = {}

    def call(layer, *args, **kwargs):
        if layer is dense:
            stash["penultimate"] = args[0]
        if layer is inner:
            stash["features"], out = two(*args, **kwargs)
            return out
        out = layer(*args, **kwargs)
        if layer is target.layer:
            stash["features"] = out
        return out

    rewired = keras.models.clone_model(model, clone_function=lambda x: x, call_function=call)
    inputs = rewired.inputs[0] if len(rewired.inputs) == 1 else rewired.inputs
    outputs = [stash["features"], stash.get("penultimate", rewired.output), rewired.output]
    return keras.Model(inputs, outputs)


EXPLAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explainer(model, layer: str = ""):
    """(target, re-wired model) for `model` and a layer name, built once per model: the
    report explains its gallery batch by batch."""
    built = EXPLAINERS.setdefault(model, {})
    if layer not in built:
        target = choose_target(model, layer)
        built[layer] = (target, explaining_model(model, target))
    return built[layer]


def output_dense(model):
    """The final softmax Dense (its kernel gives the pre-softmax scores), or None."""
    import keras

    try:
        layer = model.get_layer(OUTPUT_LAYER)
    except ValueError:
        return None
    return layer if isinstance(layer, keras.layers.Dense) else None


def class_scores(model, penultimate, probabilities):
    """Pre-softmax scores (B, K): the Dense's logits, else the log-probabilities."""
    from keras import ops

    dense = output_dense(model)
    if dense is None:
        return ops.log(ops.maximum(ops.cast(probabilities, "float32"), 1e-30))
    logits = ops.matmul(ops.cast(penultimate, "float32"), ops.cast(dense.kernel, "float32"))
    return logits + ops.cast(dense.bias, "float32") if dense.use_bias else logits


def feature_gradients(net, model, inputs, classes=None):
    """(feature maps, d score_class / d feature maps, probabilities, classes) for a batch,
    in one forward pass; `classes` None: each image's predicted class."""
    import keras
    from keras import ops

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UserError(
            f"explain needs the gradient of TensorFlow; KERAS_BACKEND is {backend!r}: "
            "unset it (or set it to tensorflow) for visionpipe explain and evaluate's pictures"
        )
    import tensorflow as tf

    with tf.GradientTape() as tape:
        features, penultimate, probabilities = net(inputs, training=False)
        if classes is None:
            classes = ops.convert_to_numpy(ops.argmax(probabilities, axis=-1))
        pick = ops.one_hot(ops.convert_to_tensor(classes), probabilities.shape[-1])
        score = ops.sum(class_scores(model, penultimate, probabilities) * pick)
    return features, tape.gradient(score, features), probabilities, np.asarray(classes)


def heatmaps(model, images: np.ndarray, rows=None, layer: str = "", classes=None):
    """Grad-CAM maps (N, S, S) in 0..1 at the model's input size, the explained class and
    its probability (the model's output) per image, and the target layer's name. `classes`
    defaults to the predicted class; an averaged ensemble averages its members' maps."""
    from keras import ops

    from components.vision import metadata

    inputs = metadata.model_inputs(np.asarray(images, np.float32), rows)
    members = ensemble_members(model)
    if members:
        probs = np.asarray(model.predict_on_batch(inputs), np.float64)
        explained = probs.argmax(1) if classes is None else np.asarray(classes)
        maps = [heatmaps(m, images, rows, layer, explained)[0] for m in members]
        chosen = probs[np.arange(len(images)), explained]
        return np.mean(maps, axis=0), explained, chosen, f"mean over {len(members)} members"
    target, net = explainer(model, layer)
    features, gradients, probabilities, explained = feature_gradients(net, model, inputs, classes)
    features = ops.cast(features, "float32")
    weights = ops.mean(ops.cast(gradients, "float32"), axis=(1, 2))  # (N, k)
    cam = ops.relu(ops.sum(features * weights[:, None, None, :], axis=-1))  # (N, h, w)
    size = int(images.shape[1])
    cam = ops.image.resize(cam[..., None], (size, size), interpolation="bilinear")[..., 0]
    peak = ops.max(cam, axis=(1, 2), keepdims=True)
    cam = ops.where(peak > 0, cam / ops.where(peak > 0, peak, 1.0), ops.zeros_like(cam))
    probabilities = np.asarray(ops.convert_to_numpy(probabilities), np.float64)
    return (
        np.clip(np.asarray(ops.convert_to_numpy(cam), np.float32), 0.0, 1.0),
        explained,
        probabilities[np.arange(len(images)), explained],
        target.name,
    )


def resize_map(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 0..1 map resized (bilinear, Keras ops) to an image's own width x height, scaled
    so that its peak is 1 again (interpolation lowers it a little)."""
    from keras import ops

    if cam.shape != (height, width):
        resized = ops.image.resize(cam[None, ..., None], (height, width), interpolation="bilinear")
        cam = np.asarray(ops.convert_to_numpy(resized))[0, ..., 0]
    peak = float(cam.max())
    return np.clip(cam / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(cam)


def peak_of(cam: np.ndarray) -> tuple[int, int]:
    """(x, y) of the map's brightest pixel."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(x), int(y)


def colour(cam: np.ndarray) -> np.ndarray:
    """A 0..1 map as an (H, W, 3) uint8 'jet' picture."""
    from matplotlib import colormaps

    return (colormaps["jet"](cam)[..., :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap over an (H, W, 3) uint8 image, weighted by the map itself so the
    picture shows through where there is no evidence."""
    weight = (alpha * cam)[..., None]
    mixed = image.astype(np.float32) * (1 - weight) + colour(cam).astype(np.float32) * weight
    return mixed.round().clip(0, 255).astype(np.uint8)


def first_conv_layers(model, count: int = 2) -> list[Target]:
    """The first `count` Conv2D-like layers (a nested backbone's included), in order."""
    import keras

    convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    return [t for t in candidate_targets(model) if isinstance(t.layer, convs)][:count]


def feature_maps(model, images: np.ndarray, rows=None, count: int = 2, channels: int = 8):
    """Per image of an (N, S, S, 3) batch: [(layer name, (channels, h, w) maps scaled to
    0..1 each)] of the first `count` conv layers (each re-wired model built once); an
    ensemble shows its first member's."""
    import keras

    from components.vision import metadata

    members = ensemble_members(model)
    if members:
        return feature_maps(members[0], images, rows, count, channels)
    inputs = metadata.model_inputs(np.asarray(images, np.float32), rows)
    out: list[list] = [[] for _ in range(len(images))]
    for target in first_conv_layers(model, count):
        net = explaining_model(model, target)
        maps = np.asarray(keras.ops.convert_to_numpy(net(inputs, training=False)[0]), np.float32)
        maps = np.moveaxis(maps[..., :channels], -1, 1)  # (N, channels, h, w)
        low = maps.min(axis=(2, 3), keepdims=True)
        span = maps.max(axis=(2, 3), keepdims=True) - low
        scaled = np.where(span > 0, (maps - low) / np.maximum(span, 1e-12), 0)
        for index in range(len(images)):
            out[index].append((target.name, scaled[index]))
    return out
