"""Decoding: every kind of real-world file becomes 8-bit RGB or is refused with a reason."""

import io

import numpy as np
import pytest
from PIL import Image

from components.vision.images import ImageLimits, ImageRejected, load_rgb


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_grayscale_png_becomes_rgb():
    image = load_rgb(encode(Image.new("L", (16, 16), 200), "PNG"))
    assert image.mode == "RGB" and np.asarray(image)[0, 0].tolist() == [200, 200, 200]


def test_palette_gif_becomes_rgb():
    image = load_rgb(encode(Image.new("RGB", (16, 16), (255, 0, 0)).convert("P"), "GIF"))
    assert image.mode == "RGB" and np.asarray(image)[0, 0].tolist() == [255, 0, 0]


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert np.asarray(load_rgb(encode(rgba, "PNG")))[0, 0].tolist() == [255, 255, 255]


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    pixel = np.asarray(load_rgb(encode(cmyk, "JPEG", quality=100)))[8, 8]
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def test_16_bit_png_is_scaled_not_clipped():
    array = np.full((16, 16), 32768, dtype=np.uint16)  # half of the 16-bit range
    image = load_rgb(encode(Image.fromarray(array), "PNG"))
    assert image.mode == "RGB" and abs(int(np.asarray(image)[0, 0, 0]) - 128) <= 1


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image = load_rgb(encode(wide, "JPEG", exif=exif.tobytes()))
    assert image.size == (20, 40)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"this is a text file, not a picture", "not an image"),
        (encode(Image.new("RGB", (64, 64), 9), "PNG")[:80], "corrupt or truncated"),
        (encode(Image.new("RGB", (4, 4), 9), "PNG"), "too small"),
    ],
)
def test_bad_files_are_refused_with_reason(data, reason):
    with pytest.raises(ImageRejected, match=reason):
        load_rgb(data)


def test_decompression_bomb_is_refused_before_decoding():
    data = encode(Image.new("L", (300, 300), 0), "PNG")
    with pytest.raises(ImageRejected, match="too large"):
        load_rgb(data, ImageLimits(max_pixels=10_000))
