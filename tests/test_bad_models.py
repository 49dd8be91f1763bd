"""Corrupt, truncated or unsafe model files: one line naming the file and the fix, exit 2."""

import shutil

import pytest

from pipelines.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    """A .keras file with a Lambda layer: code that would run when it is loaded."""
    import keras

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Lambda(lambda t: t / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    folder = tmp_path_factory.mktemp("lambda") / "model"
    folder.mkdir()
    keras.Model(inputs, outputs).save(folder / "model.keras")
    return folder


def one_line_exit_2(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith("visionpipe: error: ") and "Traceback" not in "\n".join(err)
    for needle in needles:
        assert needle in err[-1], err[-1]
    return err[-1]


@pytest.mark.parametrize("name", ["model.onnx", "model.tflite", "model.keras"])
def test_a_truncated_model_file_is_one_line(name, exported, trained_model, tmp_path, capsys):
    source = trained_model / name if name.endswith(".keras") else exported / name
    broken = tmp_path / name
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    shutil.copy(exported / "labels.txt", tmp_path / "labels.txt")
    shutil.copy(exported / "config.json", tmp_path / "config.json")
    one_line_exit_2(
        capsys,
        ["predict", "--model", str(broken), str(tmp_path / "x.png")],  # the image: never read
        str(broken),
        "truncated or corrupt",
    )


def test_a_lambda_model_is_refused_by_predict_and_evaluate(
    lambda_model, digits_dataset, tmp_path, capsys
):
    line = one_line_exit_2(
        capsys,
        ["predict", "--model", str(lambda_model / "model.keras"), str(tmp_path / "x.png")],
        "Lambda",
        "safe_mode",
    )
    assert str(lambda_model / "model.keras") in line
    one_line_exit_2(
        capsys,
        [
            "evaluate",
            "--dataset",
            str(digits_dataset),
            "--model",
            str(lambda_model),
            "--output",
            str(tmp_path / "evaluation"),
        ],
        "Lambda",
    )
    one_line_exit_2(
        capsys,
        [
            "export",
            "--dataset",
            str(digits_dataset),
            "--model",
            str(lambda_model),
            "--output",
            str(tmp_path / "export"),
        ],
        "Lambda",
    )
