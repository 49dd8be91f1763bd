"""Tabular metadata columns as a second model input: encoder, tf.data, train, evaluate,
export (two-input TFLite/ONNX/SavedModel with parity) and predict, on real digits images.

The dataset (benchmarks/metadata_input.py) is built so that only the metadata
can tell the classes apart: each row's image is a real digit drawn
independently of its label, while `sensor` (categorical, right 90% of the
time) and `reading` (numeric, label + noise, some empty) carry the label. A
model that really uses its second input beats chance by far; the same model
without it cannot.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from components.infra.errors import UserError
from components.vision.metadata import MetadataEncoder, parse_spec
from tests.conftest import VISIONPIPE

# -- the encoder (no TensorFlow) --------------------------------------------------------


def rows_of(**columns):
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def test_encoder_infers_kinds_standardizes_and_one_hots():
    rows = rows_of(
        reading=["1", "3", "", "5"],
        site=["a", "b", "a", "c"],
        code=["7", "7", "8", "9"],
    )
    encoder = MetadataEncoder.fit(rows, ["reading", "site", "code:categorical"])
    kinds = {c.name: c.kind for c in encoder.columns}
    assert kinds == {"reading": "numeric", "site": "categorical", "code": "categorical"}
    assert encoder.features == [
        "reading",
        "reading=missing",  # the train split has an empty reading
        "site=a",
        "site=b",
        "site=c",
        "site=other",
        "code=7",
        "code=8",
        "code=9",
        "code=other",
    ]
    encoded = encoder.encode(rows_of(reading=["3", ""], site=["b", "zzz"], code=["9", ""]))
    std = np.std([1.0, 3.0, 5.0])
    np.testing.assert_allclose(encoded[0], [0, 0, 0, 1, 0, 0, 0, 0, 1, 0], atol=1e-6)
    # missing reading: the mean (0) and the indicator; unseen site and empty code: "other"
    np.testing.assert_allclose(encoded[1], [0, 1, 0, 0, 0, 1, 0, 0, 0, 1], atol=1e-6)
    assert encoder.encode(rows_of(reading=["5"], site=["a"], code=["7"]))[0, 0] == pytest.approx(
        2 / std, rel=1e-5
    )
    again = MetadataEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    np.testing.assert_array_equal(again.encode(rows), encoder.encode(rows))


def test_encoder_refuses_what_it_cannot_use():
    rows = rows_of(reading=["1", "x"], site=["a", "b"])
    with pytest.raises(UserError, match=r"'weather'.*its metadata columns: reading, site"):
        MetadataEncoder.fit(rows, ["weather"])
    with pytest.raises(UserError, match=r"declared numeric.*'x'.*reading:categorical"):
        MetadataEncoder.fit(rows, ["reading:numeric"])
    numeric = MetadataEncoder.fit(rows_of(reading=["1", "2"]), ["reading"])
    with pytest.raises(UserError, match="numeric but got 'n/a'"):
        numeric.encode(rows_of(reading=["n/a"]))
    with pytest.raises(ValueError, match="prepare's own columns"):
        parse_spec("label")
    with pytest.raises(ValueError, match="numeric or categorical"):
        parse_spec("site:ordinal")


def test_train_config_checks_metadata_columns():
    from components.train.config import TrainConfig

    assert TrainConfig.from_dict(
        {"metadata_columns": "site, reading:numeric"}
    ).metadata_columns == [
        "site",
        "reading:numeric",
    ]
    with pytest.raises(UserError, match="metadata_columns.*prepare's own columns"):
        TrainConfig.from_dict({"metadata_columns": ["sha256"]})
    with pytest.raises(UserError, match="each column at most once"):
        TrainConfig.from_dict({"metadata_columns": ["site", "site:categorical"]})


def test_mixup_blends_metadata_by_the_label_weights():
    """MixUp / CutMix mix each row with another; its metadata must get the same blend."""
    import tensorflow as tf

    from components.vision import augment

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3)).astype("float32")
    labels = np.eye(4, dtype="float32")[[0, 1, 2, 3, 0, 1, 2, 3]]
    for layer in ("MixUp", "CutMix"):
        augmenter = augment.build("custom", seed=3, custom=[layer])
        rows = np.concatenate([labels * 10.0, np.arange(8, dtype="float32")[:, None]], axis=1)
        ds = tf.data.Dataset.from_tensors((images, labels, rows)).map(augmenter)
        (mixed_images, mixed_labels, mixed_rows) = next(iter(ds))
        mixed_labels, mixed_rows = np.asarray(mixed_labels), np.asarray(mixed_rows)
        assert not np.allclose(mixed_labels, labels)  # rows really were mixed
        np.testing.assert_allclose(mixed_rows[:, :4], mixed_labels * 10.0, rtol=1e-5, atol=1e-4)
        assert mixed_images.shape == images.shape


# -- the whole path on real images ------------------------------------------------------


@pytest.fixture(scope="session")
def metadata_manifest(tmp_path_factory):
    from benchmarks.metadata_input import write_manifest

    return write_manifest(tmp_path_factory.mktemp("metadata_data"))


@pytest.fixture(scope="session")
def metadata_run(tmp_path_factory, metadata_manifest):
    """prepare -> train (with and without metadata) -> evaluate -> export, real stages
    (the benchmark's own function, so the benchmark stays runnable)."""
    from benchmarks.metadata_input import run_all, summary

    out = tmp_path_factory.mktemp("metadata_run")
    result = run_all(metadata_manifest, out)
    assert summary(result)["test_count"] == 36
    return {"dir": out, **result}


@pytest.mark.slow
def test_the_second_input_carries_what_images_cannot(metadata_run):
    model_dir = metadata_run["dir"] / "model"
    encoder = json.loads((model_dir / "metadata.json").read_text())
    assert encoder["features"] == [
        "sensor=s0",
        "sensor=s1",
        "sensor=s2",
        "sensor=other",
        "reading",
        "reading=missing",
    ]
    assert metadata_run["with_meta"]["metadata_features"] == encoder["features"]
    # the labels are independent of the images: chance is 1/3
    assert metadata_run["image_only"]["val_accuracy"] <= 0.6
    assert metadata_run["with_meta"]["val_accuracy"] >= 0.75
    metrics = metadata_run["evaluated"]["metrics"]
    assert metrics["accuracy"] >= 0.75
    assert metadata_run["evaluated"]["blessing"]["baseline"]["baseline"]["accuracy"] <= 0.6
    # slices over the manifest's columns, and the robustness check ran with metadata
    assert {"sensor", "operator"} <= set(metrics["slices"])
    assert metrics["robustness"]["clean_accuracy"] == pytest.approx(metrics["accuracy"])


@pytest.mark.slow
def test_two_input_exports_match_keras(metadata_run):
    parity = metadata_run["exported"]["parity"]
    for name in ("tflite", "tflite_int8", "onnx"):
        assert parity[name]["passed"], (name, parity[name])
        assert parity[name]["count"] == 36
    assert parity["tflite"]["max_abs_diff"] < 1e-4 and parity["onnx"]["max_abs_diff"] < 1e-4
    export_dir = metadata_run["dir"] / "export"
    assert json.loads((export_dir / "metadata.json").read_text())["features"][0] == "sensor=s0"
    from components.vision.packed import read_attached

    assert json.loads(read_attached(export_dir / "model.tflite", "metadata.json"))["columns"]
    card = (export_dir / "model_card.md").read_text()
    assert "Input `metadata`: float32 (batch, 6)" in card and "`sensor` (categorical)" in card


def predict(capsys, model, *args):
    """`visionpipe predict` in this process (pipelines.cli.main, the console script's own
    entry point): the same parsing, loading and exit codes without a ~5 s TensorFlow import
    per call; one call below runs the installed command for real."""
    from pipelines.cli import main

    capsys.readouterr()  # drop what came before
    code = main(["predict", "--model", str(model), "--json", *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["visionpipe", "predict"], code, out, err)


@pytest.mark.slow
def test_predict_feeds_metadata_to_every_format(metadata_run, metadata_manifest, capsys):
    """The same image gets the class its metadata says, through each exported file."""
    export_dir = metadata_run["dir"] / "export"
    image = str(metadata_manifest.parent / "img" / "0005.png")
    for model in (
        export_dir / "model.onnx",
        export_dir / "model.tflite",
        export_dir / "saved_model",
        metadata_run["dir"] / "model" / "model.keras",
    ):
        tops = []
        for sensor, reading in (("s0", "0.0"), ("s2", "2.0")):
            done = predict(
                capsys, model, image, "--meta", f"sensor={sensor}", "--meta", f"reading={reading}"
            )
            assert done.returncode == 0, done.stderr
            tops.append(json.loads(done.stdout)[0]["top"][0]["label"])
        assert tops == ["north", "east"], model
    # the manifest given to prepare works as --metadata (paths resolve against its folder)
    done = predict(capsys, export_dir / "model.onnx", image, "--metadata", str(metadata_manifest))
    assert done.returncode == 0, done.stderr
    # the installed command, as a user runs it: exit 2 and one line, no traceback
    missing = subprocess.run(
        [VISIONPIPE, "predict", "--model", str(export_dir / "model.onnx"), "--json", image],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert "takes metadata columns sensor, reading" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = predict(capsys, export_dir / "model.onnx", image, "--meta", "weather=rain")
    assert unknown.returncode == 2 and "one of sensor, reading" in unknown.stderr


@pytest.mark.slow
def test_metadata_student_distils_from_an_image_only_teacher(metadata_run, tmp_path):
    """Distillation and MixUp in tf.data with a two-input student."""
    from components.train.config import TrainConfig
    from components.train.core import run as train

    metrics = train(
        TrainConfig(
            epochs=2,
            width=8,
            metadata_columns=["sensor", "reading"],
            teacher=str(metadata_run["dir"] / "image_only"),
            augmentation="custom",
            augmentation_layers=["MixUp"],
            # the checklist is test_preflight.py's; here it would add 100 steps that prove
            # nothing about distillation or MixUp
            preflight="off",
        ),
        metadata_run["dir"] / "dataset",
        tmp_path / "student",
    )
    assert metrics["epochs_run"] == 2 and "teacher_val_accuracy" in metrics
    assert (tmp_path / "student" / "metadata.json").is_file()


@pytest.mark.slow
def test_unknown_metadata_column_is_one_clear_line(metadata_run, tmp_path, capsys):
    """`visionpipe train` in this process (pipelines.cli.main, the console script's entry
    point: the same exit code and stderr line; test_predict_feeds_metadata_to_every_format
    runs the installed command for its exit-2 line)."""
    from pipelines.cli import main

    code = main(
        [
            "train",
            "--dataset",
            str(metadata_run["dir"] / "dataset"),
            "--output",
            str(tmp_path / "m"),
            "--set",
            "metadata_columns=sensor,weather",
        ]
    )
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert "'weather'" in stderr and "sensor, reading, operator" in stderr
    assert "Traceback" not in stderr
