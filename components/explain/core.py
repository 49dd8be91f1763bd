"""`visionpipe explain --model DIR|FILE --output DIR IMAGE...`

Per image: `<name>.gradcam.png` (the Grad-CAM map alone, greyscale, at the image's
own size, brightest where the evidence for the predicted class is),
`<name>.overlay.png` (the map over the image) and a row of `explain.csv`
(predicted class, its calibrated probability, the map's peak x and y in the
image's own pixels, the layer explained). See components/vision/gradcam.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from components.infra import storage
from components.infra.errors import UserError
from components.infra.storage import read_bytes
from components.vision import gradcam
from components.vision.images import ImageRejected, load_rgb, resize_square
from components.vision.models import model_file

COLUMNS = ["image", "predicted", "probability", "peak_x", "peak_y", "layer", "gradcam", "overlay"]
BATCH = 32


def output_names(images: list[str]) -> list[str]:
    """A file stem per image, unique in the output folder (b.png, b.jpg -> b, b-2)."""
    seen: dict[str, int] = {}
    names = []
    for image in images:
        stem = Path(image).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def read_images(images: list[str]) -> list[np.ndarray]:
    """Each image file as (H, W, 3) uint8 at its own size; a bad one is one line."""
    pictures = []
    for path in images:
        try:
            pictures.append(np.asarray(load_rgb(read_bytes(path)), dtype=np.uint8))
        except (ImageRejected, FileNotFoundError, IsADirectoryError) as error:
            raise UserError(f"cannot use image {path!r}: {error}") from None
    return pictures


def explain_files(
    model: str,
    images: list[str],
    output: str,
    layer: str = "",
    meta: list[str] | None = None,
    metadata_file: str | None = None,
    calibration: str | None = None,
) -> list[dict]:
    from components.vision.inference import calibrated_keras_model, load_labels, metadata_input

    if storage.is_remote(model):
        raise UserError(
            f"explain reads a local model folder or .keras file, not {model!r}: copy it "
            "here first (its classes.json and calibration come with the folder)"
        )
    model_path = Path(model_file(model))
    # the maps come from the Dense's logits, the probabilities from the calibrated output
    keras_model = calibrated_keras_model(model_path, calibration)
    labels = load_labels(model_path)
    size = int(keras_model.inputs[0].shape[1])
    pictures = read_images(images)
    rows = metadata_input(model_path, images, meta, metadata_file)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    names = output_names(images)
    results = []
    for start in range(0, len(images), BATCH):
        part = slice(start, start + BATCH)
        batch = np.stack(
            [np.asarray(resize_square(Image.fromarray(p), size)) for p in pictures[part]]
        )
        part_rows = None if rows is None else rows[part]
        cams, explained, probs, layer_name = gradcam.heatmaps(keras_model, batch, part_rows, layer)
        for offset, cam in enumerate(cams):
            index = start + offset
            results.append(
                write_one(
                    folder,
                    names[index],
                    images[index],
                    pictures[index],
                    cam,
                    labels[int(explained[offset])],
                    float(probs[offset]),
                    layer_name,
                )
            )
    with open(folder / "explain.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(results)
    return results


def write_one(
    folder: Path,
    name: str,
    image: str,
    picture: np.ndarray,
    cam: np.ndarray,
    label: str,
    probability: float,
    layer: str,
) -> dict:
    height, width = picture.shape[:2]
    own = gradcam.resize_map(cam, width, height)
    x, y = gradcam.peak_of(own)
    heat, over = f"{name}.gradcam.png", f"{name}.overlay.png"
    Image.fromarray((own * 255).round().astype(np.uint8), mode="L").save(folder / heat)
    Image.fromarray(gradcam.overlay(picture, own)).save(folder / over)
    return {
        "image": image,
        "predicted": label,
        "probability": round(probability, 6),
        "peak_x": x,
        "peak_y": y,
        "layer": layer,
        "gradcam": heat,
        "overlay": over,
    }
