"""AutoAugment's ImageNet policy (Cubuk et al., 2019) as a Keras layer for tf.data.

Keras 3 has RandAugment but no AutoAugment. The policy is the paper's 25 sub-policies
found on ImageNet; each is two operations, each applied with its own probability at its
own magnitude. Every image of a batch draws one sub-policy, then for each of its two
operations a uniform number (applied when below the probability) and, for the signed
operations (shear, rotate, colour, contrast, sharpness), a sign. Magnitudes are the
paper's 10 bins as torchvision maps them: shear 0..0.3, rotation 0..30 degrees, enhance
factors 1 +- 0..0.9, posterize 8..4 bits, solarize threshold 255..0.

Pixels are float32 0..255 (the pipeline's), rounded after each operation as the
reference implementations (PIL, uint8) do. Geometric operations fill with 0 and use
nearest-neighbour sampling (PIL's default); shear is about the top-left corner and
rotation about the centre, as in the reference.
"""

from __future__ import annotations

import math

import keras
import numpy as np

# (operation, probability, magnitude bin 0..9): the ImageNet policy, sub-policy by row
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)
OPERATIONS = (
    "ShearX",
    "Rotate",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
SIGNED = ("ShearX", "Rotate", "Color", "Contrast", "Sharpness")
# geometry and inversion can change what an image shows (a rotated 6 is a 9; an
# inverted X-ray reads differently): the robustness check replays these
NOT_ALWAYS_LABEL_PRESERVING = ("ShearX", "Rotate", "Invert", "Solarize")


def magnitude(operation: str, level: int | None) -> float:
    """The operation's strength at magnitude bin `level` (0..9), before the sign."""
    if level is None:
        return 0.0
    if operation == "ShearX":
        return 0.3 * level / 9
    if operation == "Rotate":
        return 30.0 * level / 9
    if operation in ("Color", "Contrast", "Sharpness"):
        return 0.9 * level / 9
    if operation == "Posterize":  # bits kept: 8 - round(level * 4 / 9), half to even
        return float(8 - int(np.round(level * 4 / 9)))
    if operation == "Solarize":  # the threshold
        return 255.0 * (1 - level / 9)
    return 0.0


def _tables():
    """Per sub-policy and step: operation index, probability, magnitude."""
    ops = np.array([[OPERATIONS.index(op) for op, _, _ in row] for row in IMAGENET_POLICY])
    probs = np.array([[p for _, p, _ in row] for row in IMAGENET_POLICY], np.float32)
    mags = np.array(
        [[magnitude(op, level) for op, _, level in row] for row in IMAGENET_POLICY], np.float32
    )
    return ops, probs, mags


def _gray(images):
    """PIL's "L" conversion: ITU-R 601-2 luma, rounded to an 8-bit value."""
    ops = keras.ops
    weights = ops.convert_to_tensor([0.299, 0.587, 0.114], "float32")
    return ops.round(ops.sum(images * weights, axis=-1, keepdims=True))


def _per_image(values, rank=4):
    return keras.ops.reshape(values, (-1,) + (1,) * (rank - 1))


def _blend(degenerate, images, factor):
    """PIL's Image.blend on 8-bit images: the blend, clipped, truncated to an integer."""
    blended = degenerate + _per_image(factor) * (images - degenerate)
    return keras.ops.floor(keras.ops.clip(blended, 0.0, 255.0))


def _warp(images, transform):
    return keras.ops.image.affine_transform(
        images, transform, interpolation="nearest", fill_mode="constant", fill_value=0.0
    )


def shear_x(images, amount):
    """x_in = x_out + amount * y_out about the top-left corner, through pixel centres as
    PIL samples them (hence the half-pixel offset 0.5 * amount)."""
    ops = keras.ops
    zeros, ones = ops.zeros_like(amount), ops.ones_like(amount)
    return _warp(
        images, ops.stack([ones, amount, 0.5 * amount, zeros, ones, zeros, zeros, zeros], 1)
    )


def rotate(images, degrees):
    """Counter-clockwise by `degrees` about the centre (PIL's Image.rotate)."""
    ops = keras.ops
    shape = ops.shape(images)
    height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
    angle = degrees * (math.pi / 180.0)
    cos, sin = ops.cos(angle), ops.sin(angle)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    zeros = ops.zeros_like(angle)
    # output -> input: rotate the output point clockwise about the centre
    return _warp(
        images,
        ops.stack(
            [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zeros, zeros],
            axis=1,
        ),
    )


def color(images, factor):
    return _blend(keras.ops.repeat(_gray(images), 3, axis=-1), images, factor)


def contrast(images, factor):
    # PIL: the mean of the "L" image, rounded half up to an integer
    mean = keras.ops.floor(keras.ops.mean(_gray(images), axis=(1, 2, 3), keepdims=True) + 0.5)
    return _blend(keras.ops.broadcast_to(mean, keras.ops.shape(images)), images, factor)


def sharpness(images, factor):
    """Blend with PIL's SMOOTH filter (3x3, centre 5, the rest 1, /13); borders unchanged."""
    import tensorflow as tf

    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "VALID")
    smooth = tf.round(smooth)
    padded = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
    shape = tf.shape(images)
    inner = tf.pad(tf.ones(shape[1:3] - 2), [[1, 1], [1, 1]])[None, :, :, None] > 0
    degenerate = tf.where(inner, padded, images)
    return _blend(degenerate, images, factor)


def posterize(images, bits):
    step = keras.ops.power(2.0, 8.0 - _per_image(bits))
    return keras.ops.floor(images / step) * step


def solarize(images, threshold):
    return keras.ops.where(images >= _per_image(threshold), 255.0 - images, images)


def auto_contrast(images, _unused=None):
    ops = keras.ops
    low = ops.min(images, axis=(1, 2), keepdims=True)
    high = ops.max(images, axis=(1, 2), keepdims=True)
    span = high - low
    scaled = (images - low) * 255.0 / ops.where(span > 0, span, 1.0)
    return ops.where(span > 0, ops.floor(scaled), images)


def equalize(images, _unused=None):
    """PIL's ImageOps.equalize per image and channel: a lookup table from the histogram."""
    import tensorflow as tf

    shape = tf.shape(images)
    batch = shape[0]
    pixels = tf.cast(tf.clip_by_value(images, 0, 255), tf.int32)  # (B, H, W, 3)
    flat = tf.transpose(tf.reshape(pixels, [batch, -1, 3]), [0, 2, 1])  # (B, 3, N)
    rows = tf.range(batch * 3)
    offsets = tf.reshape(rows * 256, [batch, 3, 1])
    counts = tf.math.bincount(
        tf.reshape(flat + offsets, [-1]), minlength=batch * 3 * 256, maxlength=batch * 3 * 256
    )
    histogram = tf.reshape(counts, [batch, 3, 256])
    nonzero = histogram > 0
    last = 255 - tf.argmax(
        tf.reverse(tf.cast(nonzero, tf.int32), [2]), axis=2, output_type=tf.int32
    )
    last_count = tf.gather(histogram, last, batch_dims=2)
    total = tf.reduce_sum(histogram, axis=2)
    step = (total - last_count) // 255
    safe_step = tf.maximum(step, 1)
    before = tf.cumsum(histogram, axis=2, exclusive=True)
    lut = tf.minimum((before + (safe_step // 2)[..., None]) // safe_step[..., None], 255)
    mapped = tf.gather(lut, flat, batch_dims=2)  # (B, 3, N)
    keep = (step == 0)[..., None]  # a flat channel stays as it is
    mapped = tf.where(keep, flat, mapped)
    out = tf.reshape(tf.transpose(mapped, [0, 2, 1]), shape)
    return tf.cast(out, tf.float32)


def invert(images, _unused=None):
    return 255.0 - images


FUNCTIONS = {
    "ShearX": shear_x,
    "Rotate": rotate,
    "Color": lambda x, m: color(x, 1.0 + m),
    "Contrast": lambda x, m: contrast(x, 1.0 + m),
    "Sharpness": lambda x, m: sharpness(x, 1.0 + m),
    "Posterize": posterize,
    "Solarize": solarize,
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
}


def apply_step(images, operation, apply, amount):
    """Each image's own operation (index into OPERATIONS) at its signed amount, where
    `apply` says so; the rest unchanged."""
    ops = keras.ops
    out = images
    for index, name in enumerate(OPERATIONS):
        chosen = ops.logical_and(apply, ops.equal(operation, index))
        changed = ops.round(FUNCTIONS[name](images, amount))
        out = ops.where(_per_image(chosen), changed, out)
    return out


def apply_subpolicies(images, index, draws, signs):
    """Sub-policy `index` (B,) on each image with uniform `draws` (B, 2) and `signs`
    (B, 2) in {-1, 1}: step j runs when draws[:, j] < its probability."""
    ops = keras.ops
    table_ops, table_probs, table_mags = (ops.convert_to_tensor(t) for t in _tables())
    signed = ops.convert_to_tensor([name in SIGNED for name in OPERATIONS])
    images = ops.cast(images, "float32")
    for step in range(2):
        operation = ops.take(table_ops[:, step], index)
        probability = ops.take(table_probs[:, step], index)
        amount = ops.take(table_mags[:, step], index)
        amount = ops.where(ops.take(signed, operation), amount * signs[:, step], amount)
        images = apply_step(images, operation, draws[:, step] < probability, amount)
    return images


@keras.saving.register_keras_serializable(package="visionpipe")
class AutoAugment(keras.layers.Layer):
    """The ImageNet AutoAugment policy; one sub-policy per image, drawn afresh each call."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False

    def draws(self, batch):
        random = keras.random
        index = random.randint((batch,), 0, len(IMAGENET_POLICY), seed=self.generator)
        uniform = random.uniform((batch, 2), seed=self.generator)
        signs = keras.ops.where(random.uniform((batch, 2), seed=self.generator) < 0.5, -1.0, 1.0)
        return index, uniform, signs

    def call(self, images, training=True):
        if not training:
            return images
        index, uniform, signs = self.draws(keras.ops.shape(images)[0])
        return apply_subpolicies(images, index, uniform, signs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}

    def parts(self) -> list:
        """For the robustness check: each operation that may not preserve the label, at
        the strongest magnitude the policy uses, on every image."""
        found = []
        for name in NOT_ALWAYS_LABEL_PRESERVING:
            levels = [level for row in IMAGENET_POLICY for op, _, level in row if op == name]
            amount = max(magnitude(name, level) for level in levels) if levels else 0.0
            if name == "Solarize":  # the strongest solarize has the lowest threshold
                amount = min(magnitude(name, level) for level in levels)
            found.append(FixedOperation(name, amount))
        return found


class FixedOperation:
    """One AutoAugment operation at a fixed amount on every image (robustness check)."""

    def __init__(self, name: str, amount: float):
        self.name, self.amount = name, amount
        self.label = f"AutoAugment.{name}({amount:.3g})" if amount else f"AutoAugment.{name}"

    def __call__(self, images, training=True):
        batch = keras.ops.shape(images)[0]
        return keras.ops.round(
            FUNCTIONS[self.name](
                keras.ops.cast(images, "float32"), keras.ops.full((batch,), self.amount)
            )
        )
