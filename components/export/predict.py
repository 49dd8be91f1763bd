"""`visionpipe predict`: run any exported format on image files, print the top-k labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.common.errors import UserError
from components.common.images import ImageRejected, load_for_model


def load_labels(model_path: Path) -> list[str]:
    """labels.txt beside the model, or the labels packed inside a .tflite / .onnx file."""
    folder = model_path.parent
    if model_path.suffix == ".tflite":
        from components.export.convert import read_attached_labels

        attached = read_attached_labels(model_path)
        if attached:
            return attached
    if model_path.suffix == ".onnx":
        import onnx

        meta = {
            p.key: p.value
            for p in onnx.load(str(model_path), load_external_data=False).metadata_props
        }
        if "labels" in meta:
            return json.loads(meta["labels"])
    if (folder / "labels.txt").exists():
        return (folder / "labels.txt").read_text().splitlines()
    if (folder / "classes.json").exists():
        return json.loads((folder / "classes.json").read_text())
    raise UserError(
        f"no labels.txt or classes.json beside {model_path}; keep the export folder together"
    )


def image_size_of(model_path: Path) -> int:
    """The training size S: from the export's config.json, or metadata inside the file."""
    config = model_path.parent / "config.json"
    if config.exists():
        size = json.loads(config.read_text()).get("image_size")
        if size:
            return int(size)
    if model_path.suffix == ".tflite":
        from components.export.convert import read_attached

        info = read_attached(model_path, "model_info.json")
        if info:
            return int(json.loads(info)["image_size"])
    if model_path.suffix == ".onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
        if "image_size" in meta:
            return int(meta["image_size"])
    raise UserError(
        f"cannot tell the input size of {str(model_path)!r}; keep it in its export "
        "folder (config.json) or use a file written by visionpipe export"
    )


def open_model(model_path: Path):
    """(predictor, image_size) for a .tflite, .onnx, .keras file or a SavedModel folder."""
    from components.export import runtimes

    if not model_path.exists():
        raise UserError(f"model {str(model_path)!r} does not exist; pass an exported model file")
    suffix = model_path.suffix.lower()
    if suffix == ".tflite":
        return runtimes.tflite_predictor(model_path), image_size_of(model_path)
    if suffix == ".onnx":
        return runtimes.onnx_predictor(model_path), image_size_of(model_path)
    if suffix == ".keras":
        import keras

        model = keras.models.load_model(model_path, compile=False)
        return runtimes.keras_predictor(model), int(model.input_shape[1])
    if model_path.is_dir() and (model_path / "saved_model.pb").exists():
        import tensorflow as tf

        serve = tf.saved_model.load(str(model_path)).signatures["serving_default"]

        def predict(images):
            return serve(image=tf.constant(images, tf.float32))["probabilities"].numpy()

        return predict, image_size_of(model_path)
    raise UserError(
        f"cannot tell the format of {str(model_path)!r}; expected a .tflite, .onnx "
        "or .keras file or a SavedModel folder"
    )


def predict_files(model: str, images: list[str], top_k: int = 3) -> list[dict]:
    model_path = Path(model)
    predictor, size = open_model(model_path)
    labels = load_labels(model_path)  # labels.txt sits beside the file or SavedModel folder
    results = []
    for path in images:
        try:
            array = load_for_model(path, size)
        except (ImageRejected, FileNotFoundError, IsADirectoryError) as error:
            raise UserError(f"cannot use image {path!r}: {error}") from None
        probs = predictor(array[None].astype(np.float32))[0]
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
