"""Opening a trained or exported model for inference: its labels, input size, calibration
and metadata input, whichever format it is (Keras, SavedModel, LiteRT, ONNX, OpenVINO).
`visionpipe predict`, `explain` and the server share these."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.infra.errors import UserError
from components.vision.packed import onnx_properties


def load_labels(model_path: Path) -> list[str]:
    """labels.txt beside the model, or the labels packed inside a .tflite / .onnx file."""
    folder = model_path.parent
    if model_path.suffix == ".tflite":
        from components.vision.packed import read_attached_labels

        attached = read_attached_labels(model_path)
        if attached:
            return attached
    if model_path.suffix == ".onnx":
        meta = onnx_properties(model_path)
        if "labels" in meta:
            return json.loads(meta["labels"])
    if model_path.suffix == ".xml":
        info = openvino_model_info(model_path)
        if "labels" in info:
            return json.loads(info["labels"])
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
        from components.vision.packed import read_attached

        info = read_attached(model_path, "model_info.json")
        if info:
            return int(json.loads(info)["image_size"])
    if model_path.suffix == ".onnx":
        meta = onnx_properties(model_path)
        if "image_size" in meta:
            return int(meta["image_size"])
    if model_path.suffix == ".xml":
        info = openvino_model_info(model_path)
        if "image_size" in info:
            return int(info["image_size"])
    raise UserError(
        f"cannot tell the input size of {str(model_path)!r}; keep it in its export "
        "folder (config.json) or use a file written by visionpipe export"
    )


def openvino_model_info(model_path: Path) -> dict[str, str]:
    """The rt_info `model_info` export writes into an OpenVINO IR (labels, image_size...)."""
    import openvino as ov

    model = ov.Core().read_model(str(model_path))
    if not model.has_rt_info(["model_info"]):
        return {}
    keys = ("labels", "image_size", "input", "normalization", "precision", "producer")
    return {
        key: str(model.get_rt_info(["model_info", key]).astype(str))
        for key in keys
        if model.has_rt_info(["model_info", key])
    }


def open_runtime(load, model_path: Path, what: str):
    """`load(model_path)`, with a corrupt or truncated file reported as one line."""
    try:
        return load(model_path)
    except UserError:
        raise
    except Exception as error:  # each runtime has its own: RuntimeError, ValueError, Fail...
        text = " ".join(str(error).split())[:200]
        raise UserError(
            f"{model_path} is not a readable {what} model ({type(error).__name__}: {text}); it "
            "may be truncated or corrupt: export it again or copy the file again"
        ) from None


def calibrated_keras_model(model_path: Path, calibration: str | None = None):
    """A trained model.keras with evaluate's temperature applied, as every exported file
    has it baked in (see models.calibration_for); stderr says which file gave it, or
    that the probabilities are uncalibrated because none was found."""
    import sys

    from components.vision.models import calibration_for, load_model, with_temperature

    model = load_model(model_path)  # a missing or bad model is the one line, before a note
    found = calibration_for(model_path, calibration)
    if found["file"] is None:
        why = "; ".join(found["skipped"]) or "no calibration.json beside it or in ../evaluation"
        print(
            f"note: {model_path}: probabilities are uncalibrated ({why}); pass "
            "--calibration EVALUATION_DIR, or use an exported file",
            file=sys.stderr,
        )
    else:
        print(f"note: temperature {found['temperature']:.3f} from {found['file']}", file=sys.stderr)
    return with_temperature(model, found["temperature"])


def open_model(model_path: Path, calibration: str | None = None):
    """(predictor, image_size) for a .tflite, .onnx, OpenVINO .xml or .keras file or a
    SavedModel folder; a .keras model gets evaluate's calibration (`calibration`: where)."""
    from components.vision import runtimes

    if not model_path.exists():
        raise UserError(f"model {str(model_path)!r} does not exist; pass an exported model file")
    suffix = model_path.suffix.lower()
    if suffix == ".tflite":
        predictor = open_runtime(runtimes.tflite_predictor, model_path, "TFLite")
        return predictor, image_size_of(model_path)
    if suffix == ".onnx":
        predictor = open_runtime(runtimes.onnx_predictor, model_path, "ONNX")
        return predictor, image_size_of(model_path)
    if suffix == ".xml":
        predictor = open_runtime(runtimes.openvino_predictor, model_path, "OpenVINO IR")
        return predictor, image_size_of(model_path)
    if suffix == ".keras":
        model = calibrated_keras_model(model_path, calibration)
        return runtimes.keras_predictor(model), int(model.inputs[0].shape[1])
    if model_path.is_dir() and (model_path / "saved_model.pb").exists():
        predictor = open_runtime(runtimes.saved_model_predictor, model_path, "SavedModel")
        return predictor, image_size_of(model_path)
    raise UserError(
        f"cannot tell the format of {str(model_path)!r}; expected a .tflite, .onnx, .xml "
        "(OpenVINO IR) or .keras file or a SavedModel folder"
    )


def load_encoder(model_path: Path):
    """The metadata encoder of a model trained with metadata columns (None otherwise):
    metadata.json beside the file or SavedModel folder, or packed inside a .tflite / .onnx."""
    from components.vision.metadata import MetadataEncoder, load

    found = load(model_path.parent)
    if found is not None:
        return found
    if model_path.suffix == ".tflite":
        from components.vision.packed import read_attached

        packed = read_attached(model_path, "metadata.json")
        if packed:
            return MetadataEncoder.from_dict(json.loads(packed))
    if model_path.suffix == ".onnx":
        meta = onnx_properties(model_path)
        if "metadata_encoder" in meta:
            return MetadataEncoder.from_dict(json.loads(meta["metadata_encoder"]))
    return None


def read_metadata_file(path: str) -> dict[str, dict[str, str]]:
    """Rows of a CSV or JSONL file keyed by their `image` (or `uri`) column: as written,
    as an absolute path (relative ones resolve against the file's folder, as prepare
    resolves a manifest's), and by file name, so the manifest given to prepare works."""
    from collections import Counter

    from components.vision.metadata import parse_rows

    file = Path(path)
    if not file.is_file():
        raise UserError(f"--metadata file {path!r} does not exist; pass a CSV or JSONL file")
    text = file.read_text(encoding="utf-8-sig")
    rows = parse_rows(text, file.suffix.lower() == ".jsonl", f"--metadata file {path!r}")
    key = next((k for k in ("image", "uri") if rows and k in rows[0]), None)
    if key is None:
        raise UserError(
            f"--metadata file {path!r} needs an image column naming each image file "
            "as given on the command line (or its file name)"
        )
    table: dict[str, dict[str, str]] = {}
    names = Counter(Path(row[key]).name for row in rows)
    for row in rows:
        keys = [row[key], str((file.parent / row[key]).resolve())]
        if names[Path(row[key]).name] == 1:  # a file name shared by two rows names neither
            keys.append(Path(row[key]).name)
        for name in keys:
            table.setdefault(name, row)
    return table


def metadata_for(
    encoder, images: list[str], pairs: list[str] | None, file: str | None
) -> np.ndarray:
    """Encoded (N, M) metadata for the images, from --meta name=value and/or --metadata FILE."""
    columns = [c.name for c in encoder.columns]
    given: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or name.strip() not in columns:
            raise UserError(
                f"--meta {pair!r}: expected name=value with name one of {', '.join(columns)}"
            )
        given[name.strip()] = value.strip()
    table = read_metadata_file(file) if file else {}
    rows = []
    for image in images:
        row = dict(given)
        if table:
            match = next(
                (
                    table[k]
                    for k in (image, str(Path(image).resolve()), Path(image).name)
                    if k in table
                ),
                None,
            )
            if match is None and not given:
                raise UserError(
                    f"--metadata file {file!r} has no row for image {image!r} "
                    "(matched by the path as given, or its file name)"
                )
            row.update({c: match[c] for c in columns if match and c in match})
        missing = [c for c in columns if c not in row]
        if missing:
            raise UserError(
                f"this model also takes metadata columns {', '.join(columns)}; image {image!r} "
                f"has no value for {', '.join(missing)}: pass --meta NAME=VALUE (an empty "
                "value means unknown) or --metadata FILE with those columns"
            )
        rows.append(row)
    return encoder.encode(rows)


def metadata_input(
    model_path: Path, images: list[str], meta: list[str] | None, metadata_file: str | None
) -> np.ndarray | None:
    """The encoded metadata input for `images` of a model trained with metadata columns;
    None for a model that takes images only (which refuses --meta / --metadata)."""
    encoder = load_encoder(model_path)
    if encoder is None and (meta or metadata_file):
        raise UserError(
            f"model {str(model_path)!r} takes images only (no metadata.json with it); "
            "drop --meta / --metadata"
        )
    return metadata_for(encoder, images, meta, metadata_file) if encoder else None
