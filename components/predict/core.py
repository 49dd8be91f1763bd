"""`visionpipe predict`: run any exported format on image files, print the top-k labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.infra.errors import UserError
from components.vision.images import ImageRejected, load_for_model
from components.vision.inference import load_labels, metadata_input, open_model


def predict_files(
    model: str,
    images: list[str],
    top_k: int = 3,
    meta: list[str] | None = None,
    metadata_file: str | None = None,
    calibration: str | None = None,
) -> list[dict]:
    model_path = Path(model)
    if calibration and model_path.suffix.lower() != ".keras":
        raise UserError(
            f"--calibration is for a .keras model; {model} has the temperature baked in"
        )
    predictor, size = open_model(model_path, calibration)
    labels = load_labels(model_path)  # labels.txt sits beside the file or SavedModel folder
    rows = metadata_input(model_path, images, meta, metadata_file)
    results = []
    for index, path in enumerate(images):
        try:
            array = load_for_model(path, size)
        except (ImageRejected, FileNotFoundError, IsADirectoryError) as error:
            raise UserError(f"cannot use image {path!r}: {error}") from None
        row = None if rows is None else rows[index : index + 1]
        probs = predictor(array[None].astype(np.float32), row)[0]
        order = np.argsort(-probs)[: min(top_k, len(labels))]
        results.append(
            {
                "image": path,
                "top": [
                    {"label": labels[i], "probability": round(float(probs[i]), 6)} for i in order
                ],
            }
        )
    return results
