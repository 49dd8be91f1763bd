"""What travels inside the exported files: labels, the input size and the metadata encoder.

A `.tflite` carries them in a zip archive appended to the flatbuffer (the
TFLite Support associated-file convention; runtimes ignore the trailing
bytes), a `.onnx` in its `metadata_props`. Export writes them; predict (and
anyone holding only the file) reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path


def attach_labels(
    tflite_path: Path, classes: list[str], image_size: int, encoder: dict | None = None
) -> None:
    """Pack labels.txt (and metadata.json, the metadata encoder) into the .tflite file.

    This is the TFLite Support convention: a zip archive appended to the
    flatbuffer. Runtimes ignore the trailing bytes; `zipfile` (and TFLite
    Support's metadata tools) read the labels back from the same file.
    """
    import zipfile

    with zipfile.ZipFile(tflite_path, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("labels.txt", "".join(f"{name}\n" for name in classes))
        archive.writestr("model_info.json", json.dumps({"image_size": image_size}))
        if encoder is not None:
            archive.writestr("metadata.json", json.dumps(encoder))


def read_attached(tflite_path: Path, name: str) -> str | None:
    """A file packed into a .tflite by `attach_labels` (None when absent)."""
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
