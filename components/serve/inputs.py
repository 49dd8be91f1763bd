"""Turning a request's inputs into model inputs, or one clear refusal (`BadInput`).

Raw image bytes (JPEG, PNG, WebP...) are decoded exactly as prepare and predict decode
them (images.load_rgb: EXIF orientation, any mode to 8-bit RGB; then resize_square to
the training size); tensors must already be in the model's layout (B, S, S, 3), pixel
values 0..255. Limits bound what one request can cost: `Limits.max_pixels` per image
(checked from the header, before the pixels are decoded) and `Limits.max_images`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import numpy as np

from components.vision.images import ImageLimits, ImageRejected, load_rgb, resize_square

# 25 megapixels: a 12 MP phone photo passes, a 50 MP one is refused before its pixels
# are decoded (a decoded 25 MP image is 75 MB of RGB)
MAX_PIXELS = 25_000_000
MAX_IMAGES = 64  # images in one request
MAX_BODY_BYTES = 32 * 1024 * 1024  # a request body, JSON and base64 included
TENSOR_TYPES = ("FP32", "FP64", "UINT8", "INT32", "INT64", "FP16")


class BadInput(ValueError):
    """A request the server cannot answer; `reason` names the kind for the metrics."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_pixels: int = MAX_PIXELS
    max_images: int = MAX_IMAGES
    max_body_bytes: int = MAX_BODY_BYTES


@dataclass
class Decoded:
    images: np.ndarray  # (B, S, S, 3) uint8
    sha256: list[str | None]  # of each image's bytes (None for a tensor)
    sizes: list[tuple[int, int]]  # (width, height) as sent
    blobs: list[bytes] | None = None  # the image files as sent (None for a tensor)


def from_base64(text, where: str) -> bytes:
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    if not isinstance(text, str):
        raise BadInput(f"{where}: expected base64 image bytes, got {type(text).__name__}", "type")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(
            f"{where}: not valid base64 (send the file's bytes base64-encoded)", "base64"
        ) from None


def decode_images(blobs: list[bytes], size: int, limits: Limits) -> Decoded:
    """Image files' bytes -> the model input, as prepare decodes and resizes them."""
    if not blobs:
        raise BadInput("no image in the request", "empty")
    if len(blobs) > limits.max_images:
        raise BadInput(
            f"{len(blobs)} images in one request; at most {limits.max_images}", "too_many"
        )
    arrays, hashes, sizes = [], [], []
    image_limits = ImageLimits(min_side=1, max_pixels=limits.max_pixels)
    for n, blob in enumerate(blobs):
        try:
            image = load_rgb(blob, image_limits)
        except ImageRejected as error:
            reason = str(error).split(":")[0].split(" (")[0].replace(" ", "_")
            raise BadInput(f"image {n}: {error}", reason) from None
        sizes.append(image.size)
        hashes.append(hashlib.sha256(blob).hexdigest())
        arrays.append(np.asarray(resize_square(image, size), dtype=np.uint8))
    return Decoded(np.stack(arrays), hashes, sizes, list(blobs))


def decode_tensor(data, shape: list[int], datatype: str, size: int, limits: Limits) -> Decoded:
    """A tensor in the model's layout (B, S, S, 3), pixel values 0..255."""
    if datatype not in TENSOR_TYPES:
        raise BadInput(
            f"tensor datatype {datatype}: expected BYTES (image files) or one of "
            f"{', '.join(TENSOR_TYPES)} (pixels)",
            "datatype",
        )
    expected = f"[B, {size}, {size}, 3]"
    if len(shape) != 4 or list(shape[1:]) != [size, size, 3]:
        raise BadInput(f"tensor shape {list(shape)}: expected {expected} (B, H, W, RGB)", "shape")
    if shape[0] < 1 or shape[0] > limits.max_images:
        raise BadInput(f"tensor batch {shape[0]}: expected 1..{limits.max_images}", "shape")
    try:
        array = np.asarray(data, dtype=np.float32).reshape(shape)
    except (ValueError, TypeError):
        raise BadInput(
            f"tensor data does not hold {int(np.prod(shape))} numbers for shape {list(shape)}",
            "shape",
        ) from None
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise BadInput("tensor values must be pixels in 0..255 (not normalised)", "range")
    return Decoded(array, [None] * shape[0], [(size, size)] * shape[0])


def encode_metadata(encoder, rows, count: int) -> np.ndarray | None:
    """The encoded metadata of a metadata model (None for an images-only model): `rows`
    is one dict of field -> value per image (or one dict for them all)."""
    if encoder is None:
        if rows:
            raise BadInput("this model takes images only: drop the metadata", "metadata")
        return None
    columns = [c.name for c in encoder.columns]
    if isinstance(rows, dict):
        rows = [rows] * count
    if not isinstance(rows, list) or len(rows) != count:
        raise BadInput(
            f"this model also takes metadata fields {', '.join(columns)}: send parameters "
            f'"metadata" as one object per image ({count}) of field -> value',
            "metadata",
        )
    for n, row in enumerate(rows):
        missing = [c for c in columns if not isinstance(row, dict) or c not in row]
        if missing:
            raise BadInput(
                f"image {n}: missing metadata field(s) {', '.join(missing)} (an empty "
                "string means unknown)",
                "metadata",
            )
    return encoder.encode([{c: str(row[c]) for c in columns} for row in rows])
