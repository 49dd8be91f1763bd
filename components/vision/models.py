"""Loading a trained Keras model, for every stage and command that needs one.

One place decides how a model file is found and how a bad one is reported: a
missing, corrupt or truncated `.keras` file, or one that holds arbitrary code,
is one line naming the file and the fix (exit 2), never a traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from components.infra import storage
from components.infra.errors import UserError
from components.vision import metadata


def model_file(model_dir: str | Path) -> str:
    """The model.keras a folder, a .keras path or a gs:// URI of either stands for."""
    uri = str(model_dir)
    return uri if uri.endswith(".keras") else uri.rstrip("/") + "/model.keras"


def load_model(model_dir: str | Path):
    """A trained model from its folder, a .keras file, or a gs:// URI of either.

    Keras' safe_mode stays on: a model with a Lambda layer (code that would run on load)
    is refused, not executed.
    """
    uri = model_file(model_dir)
    if not storage.exists(uri):
        raise UserError(
            f"no model at {uri}; pass the output folder of `visionpipe train` or a .keras file"
        )
    if storage.is_remote(uri):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model.keras"
            storage.download_file(uri, local)
            return _load(local, uri)
    return _load(Path(uri), uri)


def _load(path: Path, shown: str):
    import keras

    import components.vision.layers  # noqa: F401  (registers the layers models contain)

    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # zipfile.BadZipFile, ValueError, OSError, KeyError, ...
        text = " ".join(str(error).split())
        if "safe_mode" in text or "Lambda" in text:
            raise UserError(
                f"{shown} contains a Lambda layer (code that would run when it is loaded); "
                "visionpipe loads models with Keras' safe_mode on and refuses it: rebuild the "
                "model with registered layers instead of Lambda"
            ) from None
        raise UserError(
            f"{shown} is not a readable Keras model ({type(error).__name__}: {text[:200]}); "
            "it may be truncated or corrupt: re-run train or copy the file again"
        ) from None


def metadata_rows(
    model, model_dir, dataset: Path, splits: dict[str, list[str]]
) -> tuple[metadata.MetadataEncoder | None, dict[str, np.ndarray | None]]:
    """The encoder saved with the model and each split's encoded metadata, in `uris`
    order; (None, None for each) when the model takes images only."""
    if not metadata.takes_metadata(model):
        return None, {split: None for split in splits}
    encoder = metadata.load(model_dir)
    if encoder is None:
        raise UserError(
            f"model {model_dir} takes a metadata input but has no {metadata.FILE} beside it; "
            "keep the train stage's output folder together"
        )
    return encoder, {
        split: metadata.split_matrix(encoder, dataset, split, uris)[1]
        for split, uris in splits.items()
    }


CALIBRATION_FILE = "calibration.json"  # evaluate's temperature, fitted on val


def model_digest(model_dir: str | Path) -> str:
    """sha256 of the model.keras a folder or file stands for: what a calibration is for."""
    import hashlib

    return hashlib.sha256(storage.read_bytes(model_file(model_dir))).hexdigest()


def calibration_for(model_dir: str | Path, given: str | None = None) -> dict:
    """The temperature evaluate fitted for this model: `given` (a calibration.json or an
    evaluation folder), else calibration.json beside the model or in the `evaluation`
    folder next to the model's (a run folder and a registry version both keep them so).
    A file made for another model (its model_sha256 differs) is not used. Returns
    {"temperature", "file"} ("file" None: none found, T = 1), or why a file was skipped."""
    import json

    uri = model_file(model_dir)
    if storage.is_remote(uri):  # text: a gs:// URI is no Path
        folder = uri.rsplit("/", 1)[0]
        beside = [folder, folder.rsplit("/", 1)[0] + "/evaluation"]
    else:
        beside = [Path(uri).parent, Path(uri).parent.parent / "evaluation"]
    candidates = [given] if given else beside
    skipped = []
    for candidate in candidates:
        path = str(candidate)
        if not path.endswith(".json"):
            path = path.rstrip("/") + "/" + CALIBRATION_FILE
        if not storage.exists(path):
            if given:
                raise UserError(f"--calibration {given!r}: no {path}; pass evaluate's output")
            continue
        found = json.loads(storage.read_bytes(path))
        digest = found.get("model_sha256")
        if digest and digest != model_digest(model_dir):
            skipped.append(f"{path} was fitted for another model.keras")
            if given:
                raise UserError(f"--calibration {given!r}: {skipped[-1]}; pass this model's")
            continue
        return {"temperature": float(found.get("temperature", 1.0)), "file": path}
    return {"temperature": 1.0, "file": None, "skipped": skipped}


def with_temperature(model, temperature: float):
    """`model` with its probabilities temperature-scaled (evaluate's calibration.json): the
    exported graphs and `predict` on a .keras file then give the calibrated
    probabilities; the top-1 class is unchanged."""
    import keras

    from components.vision.layers import TemperatureScaling

    if temperature == 1.0:
        return model
    scaled = TemperatureScaling(temperature, name="temperature_scaling")(model.outputs[0])
    return keras.Model(model.inputs, scaled, name=model.name)


ENSEMBLE_AVERAGE = "ensemble_average"  # the layer train.ensemble averages members with


def ensemble_members(model) -> list:
    """The member models of an averaged ensemble (train.ensemble); [] for a single model."""
    import keras

    if ENSEMBLE_AVERAGE not in {layer.name for layer in model.layers}:
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def embedding_model(model):
    """A model from the input to the penultimate representation (the last layer's input);
    for an averaged ensemble, its first member's."""
    import keras

    members = ensemble_members(model)
    if members:
        first = members[0]
        inner = keras.Model(first.inputs, first.layers[-1].input)
        feed = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        return keras.Model(feed, inner(feed))
    return keras.Model(model.inputs, model.layers[-1].input)


def predict_batches(
    model, images: np.ndarray, batch_size: int, rows: np.ndarray | None = None, dtype=np.float32
) -> np.ndarray:
    """The model's outputs, batch by batch: only one float32 batch of images at a time
    (never a float copy of the whole split), kept as `dtype`."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].astype(np.float32)
        part = None if rows is None else rows[start : start + batch_size]
        outputs.append(
            np.asarray(model.predict_on_batch(metadata.model_inputs(batch, part)), dtype)
        )
    if outputs:
        return np.concatenate(outputs)
    return np.zeros((0, *model.output_shape[1:]), dtype)


def predict_probs(
    model, images: np.ndarray, batch_size: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Class probabilities; `rows` is the metadata input of a two-input model."""
    probs = predict_batches(model, images, batch_size, rows, np.float64)
    return probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 within ~1e-7
