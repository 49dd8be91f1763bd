"""The .tflite files in the runtimes users ship them to: MediaPipe Tasks' ImageClassifier
(real, from the dev extra) on the whole test split, and the standard metadata as a
metadata reader sees it."""

import json
import shutil
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.slow

FILES = ("model.tflite", "model_fp16.tflite", "model_dynamic_int8.tflite", "model_int8.tflite")
DIGITS = [str(d) for d in range(10)]


def classify_all(path, images):
    """MediaPipe's ImageClassifier on RGB arrays: (top-1 names, category names seen)."""
    import mediapipe as mp
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision.image_classifier import (
        ImageClassifier,
        ImageClassifierOptions,
    )

    options = ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=len(DIGITS)
    )
    top, seen = [], set()
    with ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            categories = classifier.classify(frame).classifications[0].categories
            top.append(categories[0].category_name)
            seen.update(c.category_name for c in categories)
    return top, seen


@pytest.fixture(scope="module")
def test_split(digits_dataset):
    from components.vision.records import load_split_arrays

    images, labels, _ = load_split_arrays(digits_dataset, "test", 32)
    return images, labels


@pytest.fixture(scope="module")
def keras_top1(trained_model, test_split):
    import keras

    model = keras.models.load_model(trained_model / "model.keras", compile=False)
    return model.predict(test_split[0].astype(np.float32), verbose=0).argmax(1)


def test_mediapipe_image_classifier_takes_every_tflite_file(exported, test_split, keras_top1):
    images, labels = test_split
    keras_accuracy = float((keras_top1 == labels).mean())
    for name in FILES:
        top, seen = classify_all(exported / name, images)
        assert seen <= set(DIGITS) and len(seen) == len(DIGITS), name  # the class names
        predicted = np.array([int(t) for t in top])
        accuracy = float((predicted == labels).mean())
        if name in ("model.tflite", "model_fp16.tflite"):
            agreement = float((predicted == keras_top1).mean())
            assert agreement >= 0.99, (name, agreement)
        assert keras_accuracy - accuracy <= 0.01, (name, accuracy, keras_accuracy)


def test_standard_metadata_as_a_reader_sees_it(exported):
    from components.export import tflite_metadata
    from components.export.schema import metadata_schema_generated as schema
    from components.vision.packed import read_attached, read_attached_labels

    for name in FILES:
        meta = tflite_metadata.read(exported / name)
        assert meta["name"] == "small_cnn image classifier", name
        assert meta["author"].startswith("visionpipe ") and meta["version"]
        assert "10 classes" in meta["description"] and meta["minParserVersion"] == "1.0.0"
        (subgraph,) = meta["subgraphMetadata"]
        (image,) = subgraph["inputTensorMetadata"]
        assert image["content"]["contentPropertiesType"] == schema.ContentProperties.ImageProperties
        assert image["content"]["contentProperties"]["colorSpace"] == schema.ColorSpaceType.RGB
        (normalization,) = image["processUnits"]
        assert normalization["options"] == {"mean": [0.0], "std": [1.0]}
        assert image["stats"] == {"min": [0.0], "max": [255.0]}
        (output,) = subgraph["outputTensorMetadata"]
        (labels,) = output["associatedFiles"]
        assert labels["name"] == "labels.txt"
        assert labels["type"] == schema.AssociatedFileType.TENSOR_AXIS_LABELS
        # every file the metadata names travels inside the .tflite
        assert read_attached_labels(exported / name) == DIGITS
        assert json.loads(read_attached(exported / name, "model_info.json")) == {"image_size": 32}


def test_metadata_is_replaced_not_stacked(tmp_path, exported):
    """Writing the metadata into a file that has it already keeps one entry, and LiteRT
    still runs the file."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import schema_py_generated as tfl

    from components.export import tflite_metadata

    copy = tmp_path / "model.tflite"
    shutil.copy(exported / "model.tflite", copy)
    description = tflite_metadata.Description(
        name="renamed", description="d", version="2", author="a", classes=DIGITS, image_size=32
    )
    tflite_metadata.populate(copy, description)
    model = tfl.Model.GetRootAsModel(copy.read_bytes(), 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    assert names.count("TFLITE_METADATA") == 1
    assert tflite_metadata.read(copy)["name"] == "renamed"
    interpreter = Interpreter(model_path=str(copy))
    interpreter.allocate_tensors()
    interpreter.set_tensor(
        interpreter.get_input_details()[0]["index"], np.zeros((1, 32, 32, 3), np.float32)
    )
    interpreter.invoke()


def test_generated_schema_matches_flatc(tmp_path):
    """The committed Python schema is what flatbuffers' compiler makes of the .fbs
    (`make tflite-schema`); skipped where flatc is not installed (make system-deps)."""
    from pathlib import Path

    flatc = shutil.which("flatc")
    if flatc is None:
        pytest.skip("flatc not installed (Debian: flatbuffers-compiler; make system-deps)")
    folder = Path(__file__).parent.parent / "components" / "export" / "schema"
    subprocess.run(
        [
            flatc,
            "--python",
            "--gen-object-api",
            "--gen-onefile",
            "-o",
            str(tmp_path),
            str(folder / "metadata_schema.fbs"),
        ],
        check=True,
        capture_output=True,
    )
    generated = (tmp_path / "metadata_schema_generated.py").read_text()
    assert generated == (folder / "metadata_schema_generated.py").read_text()
