"""Typed configs: unknown keys, wrong types and bad values are refused with the key named."""

import pytest

from components.evaluate.config import EvaluateConfig
from components.export.config import ExportConfig
from components.infra.config import parse_overrides, split_sections, stage_config
from components.infra.errors import UserError
from components.prepare.config import PrepareConfig
from components.train.config import TrainConfig


def test_defaults_are_valid():
    for cls in (PrepareConfig, TrainConfig, EvaluateConfig, ExportConfig):
        cls.from_dict({}).validate()


def test_unknown_key_names_key_value_and_allowed_keys():
    with pytest.raises(UserError, match=r"unknown train config key 'epoch' \(value 3\).*epochs"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(
    "cls, raw, pattern",
    [
        (TrainConfig, {"epochs": "many"}, r"epochs='many' is invalid; expected an integer"),
        (TrainConfig, {"epochs": 0}, r"epochs=0 is invalid; expected >= 1"),
        (TrainConfig, {"optimizer": "rmsprop"}, r"optimizer='rmsprop'.*one of 'adam'"),
        (TrainConfig, {"model": "ResNet9000"}, r"model='ResNet9000'.*MobileNetV3Small"),
        (TrainConfig, {"augmentation": "wild"}, r"augmentation='wild'.*safe"),
        (PrepareConfig, {"test_fraction": 1.5}, r"test_fraction=1.5"),
        (PrepareConfig, {"val_fraction": 0.5, "test_fraction": 0.45}, r"at least 10%"),
        (PrepareConfig, {"image_size": 3}, r"image_size=3"),
        (EvaluateConfig, {"min_accuracy": 2}, r"min_accuracy=2.0.*0..1"),
        (
            ExportConfig,
            {"formats": ["tflite", "coreml"]},
            r"formats=.*saved_model, tflite, tflite_fp16, tflite_dynamic, tflite_int8, onnx",
        ),
        (TrainConfig, {"use_class_weights": "yes"}, r"true or false"),
    ],
)
def test_bad_values_are_refused(cls, raw, pattern):
    with pytest.raises(UserError, match=pattern):
        cls.from_dict(raw)


def test_overrides_keep_the_typed_text_until_the_key_type_reads_it():
    """YAML would make 1.10 a float 1.1 and 010 an octal 8; the key's type decides instead
    (see test_set_values_keep_what_was_typed_by_the_keys_type)."""
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=text", "e=[x, y]", "f=null"]) == {
        "a": "1",
        "b": "0.5",
        "c": "true",
        "d": "text",
        "e": "[x, y]",
        "f": "null",
    }
    with pytest.raises(UserError, match="key=value"):
        parse_overrides(["novalue"])


def test_int_accepted_for_float_and_comma_list_for_list():
    assert EvaluateConfig.from_dict({"min_accuracy": 1}).min_accuracy == 1.0
    assert ExportConfig.from_dict({"formats": "onnx,tflite"}).formats == ["onnx", "tflite"]


def test_whole_run_sections_and_dotted_keys():
    sections = split_sections({"train": {"epochs": 2}, "prepare.seed": 7})
    assert sections["train"] == {"epochs": 2} and sections["prepare"] == {"seed": 7}
    with pytest.raises(UserError, match="stage one of prepare, validate, train, evaluate, export"):
        split_sections({"trian.epochs": 2})


def test_stage_config_reads_whole_run_file_and_stage_prefixed_sets(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 4\nprepare:\n  seed: 1\n")
    config = stage_config(TrainConfig, str(path), ["train.batch_size=16", "dropout=0.1"])
    assert (config.epochs, config.batch_size, config.dropout) == (4, 16, 0.1)


def test_missing_or_bad_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        stage_config(TrainConfig, str(tmp_path / "nope.yaml"), [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        stage_config(TrainConfig, str(bad), [])


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("push.version", "1.10", "1.10"),  # a str key keeps exactly what was typed
        ("push.version", "010", "010"),
        ("push.version", "yes", "yes"),
        ("push.version", "null", "null"),
        ("push.version", "1e-3", "1e-3"),
        ("train.epochs", "010", 10),  # a number key gets the decimal number
        ("train.epochs", "1e1", 10),
        ("train.learning_rate", "1e-3", 0.001),
        ("evaluate.min_accuracy", "0.90", 0.9),
        ("train.ema", "yes", True),  # a bool key: true/false, yes/no, on/off
        ("train.ema", "off", False),
        ("prepare.image_size", "null", None),  # an optional number: null is None
        ("prepare.image_size", "64", 64),
        ("export.formats", "[onnx, tflite]", ["onnx", "tflite"]),
        ("export.formats", "onnx,tflite", ["onnx", "tflite"]),
    ],
)
def test_set_values_keep_what_was_typed_by_the_keys_type(key, text, expected):
    from pipelines.cli import run_configs

    section, name = key.split(".")
    value = run_configs(None, [f"{key}={text}"])[section].get(name)  # null: not passed on
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("train.epochs", "yes"),
        ("train.epochs", "1.5"),
        ("train.ema", "maybe"),
        ("train.learning_rate", "fast"),
    ],
)
def test_set_values_of_the_wrong_type_are_refused_naming_the_text(key, text):
    from pipelines.cli import run_configs

    with pytest.raises(UserError, match=rf"{key.split('.')[1]}={text} is invalid"):
        run_configs(None, [f"{key}={text}"])


def test_an_unknown_key_suggests_the_nearest_allowed_one():
    from components.train.config import TrainConfig

    with pytest.raises(UserError, match=r"'epoch' \(value 3\); did you mean 'epochs'\? allowed"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(UserError, match="did you mean 'train'"):
        split_sections({"trian.epochs": 3})
    with pytest.raises(UserError) as far:
        TrainConfig.from_dict({"zzzz": 1})
    assert "did you mean" not in str(far.value)


def test_run_refuses_a_misspelled_key_with_a_suggestion(capsys):
    from pipelines.cli import main

    assert main(["run", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'epochs'?" in err and len(err.splitlines()) == 1


def test_the_catalog_is_what_the_registries_hold_and_validating_imports_no_keras():
    """Config validation reads components/vision/catalog.py, so the `changes` task,
    compile and submit validate every section without a TensorFlow import (it cost the
    changes task 4 s of its 5); the registries hold exactly the catalog's names."""
    import subprocess
    import sys

    from components.train.models import BACKBONES, FROM_SCRATCH
    from components.vision import catalog
    from components.vision.augment import PRESETS

    assert set(FROM_SCRATCH) == set(catalog.FROM_SCRATCH_MODELS)
    assert set(PRESETS) == set(catalog.AUGMENTATION_PRESETS)
    assert BACKBONES is catalog.BACKBONES
    probe = (
        "import sys\n"
        "from pipelines.runkey import decide\n"
        "from pipelines.stages import STAGES, config_class\n"
        "for stage in STAGES:\n"
        "    config_class(stage).from_dict({})\n"
        "decide('x', {s: {} for s in STAGES})\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
