"""The file `visionpipe serve` serves: the fastest verified ONNX Runtime or OpenVINO file
of a published version (`REGISTRY/MODEL` for the latest, `REGISTRY/MODEL/VERSION`) or of
an export folder, as the export measured it (benchmark.json at batch 1) and verified it
(parity.json). Never Keras or a SavedModel: those need TensorFlow, which the serving
image does not carry."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.infra import registry, storage
from components.infra.errors import UserError
from components.vision import monitoring, targets

# what the server reads beside the file (present or not)
BESIDE = ("benchmark.json", "parity.json", "config.json", "labels.txt", "classes.json")
EXTRA = ("metadata.json", monitoring.PROFILE_FILE)


@dataclass
class Served:
    name: str
    version: str
    file: Path
    format: str
    labels: list[str]
    size: int
    encoder: Any  # metadata.MetadataEncoder for a metadata model, else None
    predictor: Any  # monitoring.embedding_predictor
    scorer: monitoring.OodScorer | None
    why_no_ood: str | None
    project: Any  # embeddings -> the fixed-size projection logs keep


def read_json(folder: str, name: str) -> dict[str, Any]:
    uri = f"{folder}/{name}"
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else {}


def choose_format(folder: str) -> str:
    """The fastest verified servable format measured in the folder's benchmark.json, as
    push.serving: auto chooses it (monitoring.served_format)."""
    benchmark, parity = read_json(folder, "benchmark.json"), read_json(folder, "parity.json")
    if not benchmark:
        raise UserError(
            f"{folder} has no benchmark.json: serve an export folder or a published version "
            "(REGISTRY/MODEL[/VERSION]) written by visionpipe export/push"
        )
    chosen = monitoring.served_format(benchmark, parity)
    if chosen is None:
        raise UserError(
            f"{folder} has no verified ONNX or OpenVINO file (benchmark.json measured "
            f"{', '.join(sorted(benchmark)) or 'nothing'}); add onnx or openvino to "
            "export.formats and export again"
        )
    return chosen


def locate(source: str) -> tuple[str, str, str]:
    """(folder holding the export files, model name, version) of a source."""
    version = registry.resolve(source)
    if version is not None:
        return version.uri, version.model_name or "model", version.version
    if storage.exists(f"{source.rstrip('/')}/benchmark.json"):
        folder = source.rstrip("/")
        config = read_json(folder, "config.json")
        name = str(config.get("model_name") or "model")
        return folder, name, str(config.get("version") or Path(folder).name)
    raise UserError(
        f"{source!r} is neither a published version (REGISTRY/MODEL with latest.json, or "
        "REGISTRY/MODEL/VERSION with manifest.json) nor an export folder (benchmark.json)"
    )


def local_copy(folder: str, file_name: str) -> Path:
    """The files serving needs, as a local folder (a bucket's are downloaded)."""
    if not storage.is_remote(folder):
        return Path(folder)
    target = Path(tempfile.mkdtemp(prefix="visionpipe-serve-"))
    wanted = [file_name, *BESIDE, *EXTRA]
    if file_name.endswith(".xml"):
        wanted.append(file_name[: -len(".xml")] + ".bin")
    for name in wanted:
        if storage.exists(f"{folder}/{name}"):
            storage.download_file(f"{folder}/{name}", target / name)
    return target


def ood_scorer(folder: Path, file_name: str, width: int):
    """(scorer, None) from the version's monitor_reference.json, or (None, why not)."""
    path = folder / monitoring.PROFILE_FILE
    if not path.exists():
        return None, f"no {monitoring.PROFILE_FILE} beside the file (push publishes it)"
    profile = json.loads(path.read_text())
    if profile.get("file") != file_name or int(profile["embedding"]["width"]) != width:
        return None, (
            f"{monitoring.PROFILE_FILE} was measured on {profile.get('file')}, not {file_name}"
        )
    return monitoring.OodScorer(profile), None


def open_served(source: str, name: str | None = None) -> Served:
    """Everything a request needs, loaded once: the runtime, labels, input size, metadata
    encoder, OOD rule and projection."""
    from components.vision.inference import image_size_of, load_encoder, load_labels

    folder, model_name, version = locate(source)
    fmt = choose_format(folder)
    file_name = targets.FILES[fmt]
    local = local_copy(folder, file_name)
    path = local / file_name
    try:
        predictor = monitoring.embedding_predictor(path)
    except Exception as error:  # a corrupt file, a graph without a Dense head
        raise UserError(f"cannot serve {folder}/{file_name}: {error}") from None
    size = image_size_of(path)
    encoder = load_encoder(path)
    rows = None if encoder is None else np.zeros((1, encoder.size), np.float32)
    _, embedded = predictor(np.zeros((1, size, size, 3), np.float32), rows)
    width = int(embedded.shape[1])
    scorer, why = ood_scorer(local, file_name, width)
    return Served(
        name=name or model_name,
        version=version,
        file=path,
        format=fmt,
        labels=load_labels(path),
        size=size,
        encoder=encoder,
        predictor=predictor,
        scorer=scorer,
        why_no_ood=why,
        project=monitoring.projection(width),
    )
