"""Decoding images the way training sees them.

Every stage that reads an image file (prepare, predict, evaluation reports)
goes through `load_rgb`, so a picture means the same thing everywhere: EXIF
orientation applied, grayscale / palette / RGBA / CMYK / 16-bit turned into
8-bit RGB, and files that are not images, truncated, too large (decompression
bombs) or too small refused with a reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Resampling used for every resize to the training size, in prepare and at
# prediction time, so that served images match the training images.
RESAMPLE = Image.Resampling.BILINEAR


class ImageRejected(ValueError):
    """This file cannot be used as a training image; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 8  # the built-in digits are 8x8
    max_pixels: int = 89_478_485  # Pillow's own decompression-bomb threshold


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def load_rgb(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode bytes into an 8-bit RGB PIL image, or raise `ImageRejected` with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageRejected(
                    f"too large: {width}x{height} = {width * height} pixels "
                    f"> max_pixels {limits.max_pixels}"
                )
            image.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(f"too large (decompression bomb): {error}") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRejected(f"corrupt or truncated image: {error}") from None
    if min(width, height) < limits.min_side:
        raise ImageRejected(f"too small: {width}x{height} < min_side {limits.min_side}")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as error:  # a broken EXIF block must not kill the scan
        raise ImageRejected(f"unreadable EXIF orientation: {error}") from None
    return to_rgb8(image)


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB (16-bit scaled down, alpha composited on white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.uint32)
        peak = 65535 if image.mode.startswith("I;16") or array.max() > 255 else 255
        array = (array.astype(np.float64) * (255.0 / peak)).round().clip(0, 255)
        return Image.fromarray(array.astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        peak = 1.0 if array.max() <= 1.0 else 255.0
        array = (array * (255.0 / peak)).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize to size x size (aspect ratio not kept: the whole picture stays in view)."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), RESAMPLE)


def load_for_model(path: str, size: int, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """An image file as the model input: (size, size, 3) uint8, decoded and resized as in prepare."""
    from components.infra.storage import read_bytes

    return np.asarray(resize_square(load_rgb(read_bytes(path), limits), size), dtype=np.uint8)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
