"""Standard TFLite metadata: what MediaPipe Tasks, the TFLite Task Library and Android
Studio's ML model binding read from a `.tflite` file.

The metadata is a `ModelMetadata` flatbuffer (the schema in `schema/metadata_schema.fbs`,
compiled to Python by flatbuffers' `flatc`: `make tflite-schema`) stored in the model's
buffer named `TFLITE_METADATA`. The files it names (labels.txt for the output's class
axis) ride in a zip archive appended to the flatbuffer, as the TFLite Support populator
writes them; the runtimes ignore the trailing bytes.

What goes in: the model's name, description, version and author; the image input as an
RGB image with its normalization (identity: the graph takes raw 0..255 pixels and
normalises inside) and value range; the metadata input, when the model has one, as a
feature vector described by metadata.json; the output as class probabilities with
labels.txt as its `TENSOR_AXIS_LABELS` file. An integer model's quantization lives on
its tensors, where the runtimes read it; the metadata's value ranges match it.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

METADATA_BUFFER = "TFLITE_METADATA"
# every field written here exists since schema 1.0.0; readers refuse newer than they know
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
INFO_FILE = "model_info.json"  # {"image_size": S}: what `visionpipe predict` resizes to
ENCODER_FILE = "metadata.json"  # the metadata input's encoder (two-input models)


@dataclass
class Description:
    """The human-readable part of the metadata, and the files that travel with it."""

    name: str
    description: str
    version: str
    author: str
    classes: list[str]
    image_size: int
    license: str = ""
    encoder: dict | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _tensor_types():
    from tensorflow.lite.python import schema_py_generated as tfl

    return tfl.TensorType


def _image_metadata(schema, tensor, size: int):
    types = _tensor_types()
    meta = schema.TensorMetadataT()
    meta.name = "image"
    pixel = "uint8" if tensor.type == types.UINT8 else "float32"
    meta.description = (
        f"RGB image resized to {size}x{size}, {pixel} pixel values 0..255 "
        "(the graph normalises inside)"
    )
    if tensor.type == types.UINT8:  # runtimes feed raw pixels: the input must mean them
        scale, zero = _quantization(tensor)
        if (scale, zero) != (1.0, 0):
            from components.export.convert import ExportFailed

            raise ExportFailed(
                f"the uint8 image input is quantized with scale {scale}, zero point {zero}; "
                "MediaPipe and the Task Library feed raw pixels, which needs scale 1, zero 0"
            )
    meta.content = schema.ContentT()
    meta.content.contentPropertiesType = schema.ContentProperties.ImageProperties
    meta.content.contentProperties = schema.ImagePropertiesT()
    meta.content.contentProperties.colorSpace = schema.ColorSpaceType.RGB
    normalization = schema.ProcessUnitT()
    normalization.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    normalization.options = schema.NormalizationOptionsT()
    normalization.options.mean = [0.0]  # identity: (pixel - 0) / 1
    normalization.options.std = [1.0]
    meta.processUnits = [normalization]
    meta.stats = schema.StatsT()
    meta.stats.min, meta.stats.max = [0.0], [255.0]
    return meta


def _quantization(tensor) -> tuple[float, int]:
    q = tensor.quantization
    if q is None or q.scale is None or not len(q.scale):
        return 0.0, 0
    return float(q.scale[0]), int(q.zeroPoint[0])


def _feature_metadata(schema, name: str, description: str, low=None, high=None):
    meta = schema.TensorMetadataT()
    meta.name, meta.description = name, description
    meta.content = schema.ContentT()
    meta.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    meta.content.contentProperties = schema.FeaturePropertiesT()
    meta.stats = schema.StatsT()
    if low is not None:
        meta.stats.min, meta.stats.max = [float(low)], [float(high)]
    return meta


def _file(schema, name: str, description: str, kind: int):
    entry = schema.AssociatedFileT()
    entry.name, entry.description, entry.type = name, description, kind
    return entry


def build(description: Description, model) -> bytes:
    """The ModelMetadata flatbuffer for `model` (a TFLite ModelT), inputs in graph order."""
    import flatbuffers

    from components.export.schema import metadata_schema_generated as schema

    graph = model.subgraphs[0]
    inputs = []
    for index in graph.inputs:
        tensor = graph.tensors[index]
        if len(tensor.shape) == 4:
            inputs.append(_image_metadata(schema, tensor, description.image_size))
        else:
            meta = _feature_metadata(
                schema,
                "metadata",
                f"metadata vector of {int(tensor.shape[-1])} values per image, encoded as "
                f"{ENCODER_FILE} says",
            )
            meta.associatedFiles = [
                _file(
                    schema,
                    ENCODER_FILE,
                    "how to encode the metadata columns",
                    schema.AssociatedFileType.DESCRIPTIONS,
                )
            ]
            inputs.append(meta)
    output = _feature_metadata(
        schema,
        "probabilities",
        f"probability of each of the {len(description.classes)} classes",
        0.0,
        1.0,
    )
    output.associatedFiles = [
        _file(
            schema,
            LABELS_FILE,
            "class names, one per line, in output order",
            schema.AssociatedFileType.TENSOR_AXIS_LABELS,
        )
    ]
    subgraph = schema.SubGraphMetadataT()
    subgraph.name = "image_classifier"
    subgraph.inputTensorMetadata = inputs
    subgraph.outputTensorMetadata = [output]

    meta = schema.ModelMetadataT()
    meta.name = description.name
    meta.description = description.description
    meta.version = description.version
    meta.author = description.author
    meta.license = description.license or None
    meta.subgraphMetadata = [subgraph]
    meta.associatedFiles = [
        _file(
            schema,
            INFO_FILE,
            "the training image size (what visionpipe predict resizes to)",
            schema.AssociatedFileType.DESCRIPTIONS,
        )
    ]
    meta.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(meta.Pack(builder), file_identifier=b"M001")
    return bytes(builder.Output())


def associated_files(description: Description) -> dict[str, str]:
    files = {
        LABELS_FILE: "".join(f"{name}\n" for name in description.classes),
        INFO_FILE: json.dumps({"image_size": description.image_size}),
        **description.extra,
    }
    if description.encoder is not None:
        files[ENCODER_FILE] = json.dumps(description.encoder)
    return files


def populate(path: Path, description: Description) -> None:
    """Write the metadata into the .tflite at `path` and append its associated files.

    `path` must be a converter's output (no archive appended yet); an earlier
    TFLITE_METADATA buffer is replaced.
    """
    from tensorflow.lite.python import schema_py_generated as tfl
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    buffer = tfl.BufferT()
    buffer.data = list(build(description, model))
    model.metadata = [
        m for m in (model.metadata or []) if _name(m) != METADATA_BUFFER
    ]  # an old entry's buffer stays (empty to readers): indices of the rest must not move
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = METADATA_BUFFER, len(model.buffers) - 1
    model.metadata.append(entry)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as files:
        for name, text in associated_files(description).items():
            files.writestr(name, text)
    # offsets relative to the archive's own start, exactly what zipfile's append mode
    # writes after a flatbuffer (and so what the TFLite Support populator writes)
    path.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model) + archive.getvalue())


def _name(entry) -> str:
    name = entry.name
    return name.decode() if isinstance(name, bytes) else str(name)


def read(path: Path) -> dict | None:
    """The metadata of a .tflite file as a plain dict (None when it has none): what a
    consumer's metadata extractor sees."""
    from tensorflow.lite.python import schema_py_generated as tfl

    from components.export.schema import metadata_schema_generated as schema

    data = path.read_bytes()
    model = tfl.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_BUFFER:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            meta = schema.ModelMetadataT.InitFromObj(
                schema.ModelMetadata.GetRootAsModelMetadata(raw, 0)
            )
            return _plain(meta)
    return None


def _plain(value):
    """Object-API flatbuffer objects as dicts and lists of plain values."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dict__"):
        return {k: _plain(v) for k, v in vars(value).items() if v is not None}
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
