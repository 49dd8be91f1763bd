"""What a served file sees, on the scale validate measures it: the penultimate embedding
of an exported ONNX or OpenVINO file, the out-of-distribution score (mean Euclidean
distance to the nearest reference train images in that embedding space, validate's
`out_of_distribution` rule), and the reference profile push publishes beside a version
(monitor_reference.json) so that served traffic has something to be compared with.

The embedding is the input of the classifier's last MatMul (the Dense layer before the
calibrated softmax), found by walking back from the probabilities output; for an averaged
ensemble that is its first member's, as validate's `embedding_model` takes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_FILE = "monitor_reference.json"
NEIGHBOURS = 5  # validate.neighbours' default: the reference train images a distance averages
OOD_QUANTILE = 0.99  # validate.ood_quantile's default
PROJECTION_COMPONENTS = 32  # the fixed-size embedding projection prediction logs keep
PROJECTION_SEED = 0
MAX_POOL = 1000  # reference train embeddings kept in the profile (push's sample size)
CONFIDENCE_BINS = 20
# the formats visionpipe serve runs, on the CPU runtimes its image carries (no TensorFlow)
SERVABLE = ("onnx", "onnx_int8", "openvino", "openvino_int8")


def served_format(benchmark: dict[str, Any], parity: dict[str, Any]) -> str | None:
    """The verified SERVABLE format visionpipe serve runs: the fastest float one at batch 1,
    unless the fastest int8 one is faster beyond the measured spread (push.serving: auto's
    rule, targets.quantized_wins); None when none was measured and verified."""
    from components.vision import targets

    found = [f for f in SERVABLE if f in benchmark and targets.verified(parity, f)]
    floats = [f for f in found if f not in targets.QUANTIZED]
    int8 = [f for f in found if f in targets.QUANTIZED]
    best_float = min(floats, key=lambda f: benchmark[f]["median_ms"]) if floats else None
    best_int8 = min(int8, key=lambda f: benchmark[f]["median_ms"]) if int8 else None
    if best_float is None or best_int8 is None:
        return best_float or best_int8
    wins, _ = targets.quantized_wins(benchmark[best_float], benchmark[best_int8])
    return best_int8 if wins else best_float


def distances(pool: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of each query row to its k nearest pool rows."""
    if len(query) == 0:
        return np.zeros(0)
    return neighbour_index(pool, k)(query)


def neighbour_index(pool: np.ndarray, k: int):
    """`distances` with the pool's index fitted once: query rows -> mean distance to their
    k nearest pool rows (scikit-learn's NearestNeighbors, Euclidean)."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=min(k, len(pool)), metric="euclidean").fit(pool)

    def mean_distance(query: np.ndarray) -> np.ndarray:
        found, _ = index.kneighbors(np.asarray(query, np.float32))
        return found.mean(axis=1)

    return mean_distance


def projection(width: int, components: int = PROJECTION_COMPONENTS, seed: int = PROJECTION_SEED):
    """A fixed Gaussian random projection (width -> components), the same for every process
    given the embedding width and seed (scikit-learn's GaussianRandomProjection)."""
    from sklearn.random_projection import GaussianRandomProjection

    fitted = GaussianRandomProjection(n_components=components, random_state=seed)
    fitted.fit(np.zeros((1, width), np.float32))
    matrix = np.asarray(fitted.components_, np.float32).T  # (width, components)
    return lambda embeddings: np.asarray(embeddings, np.float32) @ matrix


def onnx_with_embedding(path: Path):
    """(onnxruntime session, image input name, metadata input or None, probabilities name,
    embedding name) of an ONNX file with its penultimate tensor added as an output."""
    import onnx

    from components.vision.runtimes import onnx_providers

    model = onnx.load(str(path))
    producers = {out: node for node in model.graph.node for out in node.output}
    probabilities = model.graph.output[0].name
    node = producers.get(probabilities)
    while node is not None and node.op_type not in ("MatMul", "Gemm"):
        node = producers.get(node.input[0])
    if node is None:
        raise ValueError(f"{path}: no MatMul/Gemm before the probabilities output")
    embedding = node.input[0]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(embedding))
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=onnx_providers())
    inputs = session.get_inputs()
    image = next(i.name for i in inputs if len(i.shape) == 4)
    metadata = next((i for i in inputs if len(i.shape) == 2), None)
    return session, image, metadata, probabilities, embedding


def onnx_embedding_predictor(path: Path):
    session, image, metadata, probabilities, embedding = onnx_with_embedding(path)

    def predict(images: np.ndarray, rows: np.ndarray | None = None):
        feed = {image: images.astype(np.float32)}
        if metadata is not None:
            if rows is None:
                raise ValueError(f"this model takes {metadata.shape[-1]} metadata values")
            feed[metadata.name] = rows.astype(np.float32)
        probs, embedded = session.run([probabilities, embedding], feed)
        return np.asarray(probs, np.float32), np.asarray(embedded, np.float32).reshape(
            len(images), -1
        )

    return predict


def openvino_embedding_predictor(path: Path):
    """The IR with its penultimate tensor as a second output, compiled as
    runtimes.openvino_compiled compiles it (latency hint, the verified precision)."""
    import openvino as ov

    from components.vision.runtimes import openvino_inference_precision

    core = ov.Core()
    model = core.read_model(str(path))
    node = model.outputs[0].get_node()
    while node.get_type_name() != "MatMul":
        if node.get_input_size() == 0:
            raise ValueError(f"{path}: no MatMul before the probabilities output")
        node = node.input_value(0).get_node()
    embedding = model.add_outputs([node.input_value(0)])[0]
    config = {"PERFORMANCE_HINT": "LATENCY"}
    precision = openvino_inference_precision(model)
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", config)
    image = next(i for i in compiled.inputs if len(i.get_partial_shape()) == 4)
    metadata = next((i for i in compiled.inputs if len(i.get_partial_shape()) == 2), None)
    probabilities, embedded_out = compiled.outputs[0], compiled.outputs[-1]
    del embedding  # the compiled model's last output is the one added

    def predict(images: np.ndarray, rows: np.ndarray | None = None):
        feed = {image.get_any_name(): images.astype(np.float32)}
        if metadata is not None:
            if rows is None:
                raise ValueError("this model takes metadata values")
            feed[metadata.get_any_name()] = rows.astype(np.float32)
        # one request per call: requests are not shared between threads
        result = compiled.create_infer_request().infer(feed)
        probs = np.asarray(result[probabilities], np.float32).copy()
        return probs, np.asarray(result[embedded_out], np.float32).reshape(len(images), -1)

    return predict


def embedding_predictor(path: Path):
    """(images (B,S,S,3) float32, metadata rows or None) -> (probabilities (B,K),
    embeddings (B,D)) for an exported .onnx or OpenVINO .xml file."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return onnx_embedding_predictor(path)
    if suffix == ".xml":
        return openvino_embedding_predictor(path)
    raise ValueError(f"{path}: embeddings are read from .onnx or .xml files only")


def run_batches(predictor, images: np.ndarray, rows=None, batch_size: int = 64):
    probs, embeddings = [], []
    for start in range(0, len(images), batch_size):
        part = None if rows is None else rows[start : start + batch_size]
        p, e = predictor(images[start : start + batch_size].astype(np.float32), part)
        probs.append(p)
        embeddings.append(e)
    return np.concatenate(probs), np.concatenate(embeddings)


def histogram(values: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}


def image_statistics(images: np.ndarray) -> dict[str, float]:
    """Mean and spread of brightness and contrast (luminance, 0..255) of uint8 images."""
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    brightness, contrast = luma.mean(axis=(1, 2)), luma.std(axis=(1, 2))
    return {
        "brightness_mean": round(float(brightness.mean()), 4),
        "brightness_std": round(float(brightness.std()), 4),
        "contrast_mean": round(float(contrast.mean()), 4),
        "contrast_std": round(float(contrast.std()), 4),
        "height": int(images.shape[1]),
        "width": int(images.shape[2]),
    }


def reference_profile(
    predictor, labels: list[str], splits: dict[str, tuple[np.ndarray, Any]], file_name: str
) -> dict[str, Any]:
    """monitor_reference.json for a served file: `splits` maps train, val and test to
    (uint8 images (N,S,S,3), metadata rows or None), samples of the version's own images.
    Thresholds are validate's: the `OOD_QUANTILE` of the val images' distance to the train
    pool, and the (1 - OOD_QUANTILE) quantile of their top probability."""
    seen = {name: run_batches(predictor, *splits[name]) for name in ("train", "val", "test")}
    pool = seen["train"][1][:MAX_POOL]
    score = neighbour_index(pool, NEIGHBOURS)
    val_probs, val_embeddings = seen["val"]
    test_probs, test_embeddings = seen["test"]
    test_scores = score(test_embeddings)
    predicted = test_probs.argmax(axis=1)
    project = projection(pool.shape[1])
    return {
        "file": file_name,
        "classes": labels,
        "neighbours": NEIGHBOURS,
        "ood_quantile": OOD_QUANTILE,
        "thresholds": {
            "distance": float(np.quantile(score(val_embeddings), OOD_QUANTILE)),
            "confidence": float(np.quantile(val_probs.max(axis=1), 1 - OOD_QUANTILE)),
        },
        "images": {name: int(len(seen[name][0])) for name in seen},
        "class_frequencies": {
            label: round(float((predicted == k).mean()), 6) for k, label in enumerate(labels)
        },
        "confidence_histogram": histogram(
            test_probs.max(axis=1), np.linspace(0, 1, CONFIDENCE_BINS + 1)
        ),
        "ood_scores": {
            "quantiles": {
                str(q): round(float(np.quantile(test_scores, q)), 6)
                for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
            },
            "mean": round(float(test_scores.mean()), 6),
        },
        "embedding": {
            "width": int(pool.shape[1]),
            "mean": np.round(pool.mean(axis=0), 6).tolist(),
            "projection": {"components": PROJECTION_COMPONENTS, "seed": PROJECTION_SEED},
            "projected_sample": np.round(project(pool[:200]), 5).tolist(),
        },
        "train_embeddings": np.round(pool, 6).tolist(),
        "image_stats": image_statistics(splits["test"][0]),
    }


def write_profile(profile: dict[str, Any], folder: Path) -> Path:
    path = Path(folder) / PROFILE_FILE
    path.write_text(json.dumps(profile))
    return path


class OodScorer:
    """A profile's OOD rule for single requests: (distance score, far?) per embedding."""

    def __init__(self, profile: dict[str, Any]):
        pool = np.asarray(profile["train_embeddings"], np.float32)
        self.width = pool.shape[1]
        self.score = neighbour_index(pool, int(profile.get("neighbours", NEIGHBOURS)))
        self.distance = float(profile["thresholds"]["distance"])
        self.confidence = float(profile["thresholds"]["confidence"])

    def __call__(self, probs: np.ndarray, embeddings: np.ndarray):
        scores = self.score(embeddings)
        far = (scores > self.distance) | (probs.max(axis=1) < self.confidence)
        return scores, far


def dataset_profile(model_file: Path, dataset_dir: Path, limit: int = MAX_POOL):
    """The profile of `model_file` over a prepared dataset's splits (at most `limit`
    images each, stratified), or None for a model that also takes metadata (its rows are
    not read here)."""
    from components.vision.inference import image_size_of, load_encoder, load_labels
    from components.vision.records import load_split_arrays, stratified_indices

    if load_encoder(model_file) is not None:
        return None
    size = image_size_of(model_file)
    splits = {}
    for split in ("train", "val", "test"):
        images, labels, _ = load_split_arrays(dataset_dir, split, size)
        splits[split] = (images[stratified_indices(labels, limit)], None)
    predictor = embedding_predictor(model_file)
    return reference_profile(predictor, load_labels(model_file), splits, model_file.name)
