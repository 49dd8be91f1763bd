"""What travels inside the exported files: labels, the input size and the metadata encoder.

A `.tflite` carries them as the associated files of its standard TFLite
metadata: a zip archive appended to the flatbuffer (export's tflite_metadata
writes it; runtimes ignore the trailing bytes). A `.onnx` carries them in its
`metadata_props`. Predict (and anyone holding only the file) reads them back.
"""

from __future__ import annotations

from pathlib import Path


def read_attached(tflite_path: Path, name: str) -> str | None:
    """A file packed into a .tflite as a metadata associated file (None when absent)."""
    import zipfile

    try:
        with zipfile.ZipFile(tflite_path) as archive:
            return archive.read(name).decode()
    except (zipfile.BadZipFile, KeyError):
        return None


def read_attached_labels(tflite_path: Path) -> list[str] | None:
    text = read_attached(tflite_path, "labels.txt")
    return text.splitlines() if text is not None else None


def onnx_properties(model_path: Path) -> dict[str, str]:
    """The metadata_props of an .onnx file (labels, image_size, metadata_encoder...)."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def onnx_signature(path: Path) -> dict[str, list]:
    """Input and output names with their shapes (None for a dynamic dimension), and the
    opset: what the model card documents."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def shape(value) -> list:
        return [d.dim_value or d.dim_param or None for d in value.type.tensor_type.shape.dim]

    return {
        "inputs": [[v.name, shape(v)] for v in proto.graph.input],
        "outputs": [[v.name, shape(v)] for v in proto.graph.output],
        "opset": [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")],
    }
