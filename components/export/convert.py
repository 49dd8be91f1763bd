"""Turning the Keras model into SavedModel, TFLite and ONNX files.

The exported graph is the inference model: float32 images in 0..255,
(B, S, S, 3), named `image`; float32 class probabilities out, (B, K).
Normalisation lives inside it; augmentation never does (it runs in tf.data).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from components.common.errors import UserError


class ExportFailed(RuntimeError):
    """A format could not be produced or does not match the Keras model."""


def input_spec(image_size: int):
    import tensorflow as tf

    return tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="image")


def serving_function(model, image_size: int):
    import tensorflow as tf

    @tf.function(input_signature=[input_spec(image_size)])
    def serve(image):
        return {"probabilities": model(image, training=False)}

    return serve


def write_saved_model(model, image_size: int, path: Path) -> None:
    """A TF SavedModel whose `serving_default` signature is the inference function."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda image: {"probabilities": model(image, training=False)},
        input_signature=[input_spec(image_size)],
    )
    archive.write_out(str(path), verbose=False)


def write_tflite(saved_model: Path, path: Path) -> None:
    """Float32 TFLite with builtin ops only; a graph that needs Flex ops is refused by name."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError with the op list inside
        message = str(error)
        ops = sorted(set(re.findall(r"(?:tf|flex)\.([A-Za-z0-9_]+)", message)))
        if "Flex" in message or "TF Select" in message or "not supported" in message:
            raise ExportFailed(
                "TFLite export needs ops outside the TFLite builtin set"
                + (f": {', '.join(ops)}" if ops else "")
                + "; replace those layers (Flex ops are not available in the mobile runtime)"
            ) from None
        raise
    path.write_bytes(flatbuffer)


def write_onnx(model, image_size: int, path: Path, opset: int, classes: list[str]) -> None:
    """ONNX through tf2onnx with a dynamic batch dimension; class names in the metadata."""
    import onnx
    import tf2onnx

    serve = serving_function(model, image_size)
    try:
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=[input_spec(image_size)], opset=opset
        )
    except ValueError as error:
        raise UserError(f"export.onnx_opset={opset} cannot express this model: {error}") from None
    entry = proto.metadata_props.add()
    entry.key, entry.value = "labels", json.dumps(classes)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "input", "image: float32 (batch, H, W, 3) RGB in 0..255"
    onnx.save(proto, str(path))
