"""Training: real Keras fits on the real digits, augmentation inside tf.data, model builders."""

import csv
import json

import keras
import numpy as np
import pytest

from components.train.models import build_model
from components.vision import augment


@pytest.mark.slow
def test_trained_model_folder_contract(trained_model):
    for name in (
        "model.keras",
        "history.csv",
        "config.json",
        "metrics.json",
        "classes.json",
        "history.png",
        "augmentation_preview.png",
    ):
        assert (trained_model / name).is_file(), name
    assert any((trained_model / "tensorboard").rglob("*tfevents*"))
    assert not (trained_model / "checkpoints").exists()
    with open(trained_model / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(rows[0])
    record = json.loads((trained_model / "config.json").read_text())
    assert record["config"]["width"] == 16 and record["versions"]["keras"].startswith("3.")


@pytest.mark.slow
def test_training_learns_the_digits(trained_model):
    metrics = json.loads((trained_model / "metrics.json").read_text())
    # 8 epochs of a 73k-weight CNN; the full default run reaches > 0.99
    assert metrics["val_accuracy"] >= 0.93
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] == 8


@pytest.mark.parametrize("name", sorted(augment.PRESETS))
def test_each_preset_runs_eagerly_and_inside_tf_data(name):
    import tensorflow as tf

    augmenter = augment.build(name, seed=1)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    if augmenter is None:
        assert name == "none"
        return
    eager, eager_labels = (np.asarray(t) for t in augmenter(images, labels))
    assert eager.shape == images.shape and np.isfinite(eager).all()
    np.testing.assert_allclose(eager_labels.sum(axis=1), 1.0, rtol=1e-5)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    ds = ds.map(augmenter)
    batches = [x.numpy() for x, _ in ds]
    assert sum(len(b) for b in batches) == 4 and all(np.isfinite(b).all() for b in batches)
    assert not np.allclose(np.concatenate(batches), images)  # it really changes the images


def test_safe_preset_never_flips():
    names = [type(layer).__name__ for layer in augment.PRESETS["safe"](0)]
    assert "RandomFlip" not in names and names == ["RandomAffine"]


def test_random_affine_geometry():
    """Fixed draws (a range of one value) must move pixels exactly as the ranges say."""
    image = np.zeros((1, 33, 33, 3), "float32")
    image[0, 16, 24] = 255.0  # 8 px right of the centre (16, 16)

    def apply(**factors):
        layer = augment.RandomAffine(interpolation="nearest", seed=0, **factors)
        out = np.asarray(layer(image, training=True))[0, :, :, 0]
        return tuple(np.round(np.argwhere(out > 128).mean(axis=0)).astype(int))  # centroid

    assert apply() == (16, 24)  # no ranges: identity
    assert apply(translation=(0.25, 0.25)) == (16 + 8, 24 + 8)  # 0.25 * 33 = 8.25 px
    assert apply(rotation=(0.25, 0.25)) in {(8, 16), (24, 16)}  # a quarter turn
    assert abs(np.subtract(apply(zoom=(-0.5, -0.5)), (16, 32))).max() <= 1  # 2x in: 2x as far
    assert apply(zoom=(1.0, 1.0)) == (16, 20)  # zoom out 2x: half as far
    np.testing.assert_array_equal(
        np.asarray(augment.RandomAffine(0.1)(image, training=False)), image
    )


def test_small_cnn_shape_and_output_dtype():
    model = build_model("small_cnn", 32, 10, 0.3, width=8)
    out = model(np.zeros((2, 32, 32, 3), "float32"), training=False)
    assert tuple(out.shape) == (2, 10) and keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("embedding").output.shape[-1] == 32


@pytest.mark.slow
def test_keras_applications_backbone_builds_with_our_head():
    model = build_model("MobileNetV3Small", 32, 3, 0.2, weights="none")
    assert model.get_layer("backbone") is not None
    out = np.asarray(model(np.full((1, 32, 32, 3), 255.0, "float32"), training=False))
    assert out.shape == (1, 3) and abs(out.sum() - 1.0) < 1e-5


def test_precision_policy_selection():
    from components.train.precision import resolve_policy

    assert resolve_policy("auto", [(8, 0)]) == "mixed_float16"  # A100: Tensor Cores
    assert resolve_policy("auto", [(7, 0), (8, 6)]) == "mixed_float16"
    assert resolve_policy("auto", [(6, 1)]) == "float32"  # Pascal: no Tensor Cores
    assert resolve_policy("auto", []) == "float32"  # CPU
    assert resolve_policy("mixed_bfloat16", []) == "mixed_bfloat16"
    assert resolve_policy("auto") == "float32"  # this machine has no GPU


@pytest.mark.slow
def test_training_under_mixed_bfloat16_on_cpu(tmp_path):
    """One epoch on the tiny digits: the checks are on the layers' dtypes, the saved
    record and the restored policy, which any fit under the policy sets."""
    import keras

    from components.train.config import TrainConfig
    from components.train.core import run
    from tests.tiny import QUICK, tiny_digits

    run(
        TrainConfig(epochs=1, precision="mixed_bfloat16", **{**QUICK, "width": 4}),
        tiny_digits(tmp_path / "tiny"),
        tmp_path / "model",
    )
    model = keras.models.load_model(tmp_path / "model" / "model.keras", compile=False)
    assert model.get_layer("block0_conv0").compute_dtype == "bfloat16"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    record = json.loads((tmp_path / "model" / "config.json").read_text())
    assert record["precision"] == "mixed_bfloat16"


def test_robustness_checks_each_part_of_the_policy_and_skips_label_mixing():
    from components.evaluate.robustness import transforms_for

    safe = transforms_for("safe", 0)
    assert sorted(safe) == [
        "RandomAffine(rotation=(-0.03, 0.03))",
        "RandomAffine(translation=(-0.1, 0.1))",
        "RandomAffine(zoom=(-0.1, 0.1))",
        "horizontal_flip",
    ]
    custom = transforms_for("custom", 0, ["RandomShear", {"MixUp": {"alpha": 0.2}}])
    assert sorted(custom) == ["RandomShear", "horizontal_flip"]
    image = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("float32")
    assert all(t(image).shape == image.shape for t in safe.values())


@pytest.mark.slow
def test_every_known_model_builds():
    """Each name the config accepts builds (random weights, 96 px); EfficientNetB0 did not."""
    from components.train.models import build_model, known_models

    for name in known_models():
        model = build_model(name, 96, 3, 0.1, "none", 8, 0.9, 0)
        assert model.output_shape == (None, 3), name


@pytest.mark.slow
def test_train_cv_reports_every_fold_with_a_mean_and_a_spread(tmp_path, capsys):
    """`visionpipe train --cv 3` on a dataset prepared without prepare.kfold: three folds of
    train+val (each image held out once), their mean and spread, then the model itself.
    The command runs in this process (a train process's exit is test_train_resume.py's);
    four digits of 30 images at 16 px, as the checks count images and folds, not accuracy."""
    import csv
    import json

    from pipelines.cli import main
    from tests.tiny import quick_args, tiny_digits

    digits_dataset = tiny_digits(tmp_path / "tiny", classes=(0, 1, 7, 9))
    out = tmp_path / "model"
    args = ["train", "--dataset", str(digits_dataset), "--output", str(out), "--cv", "3"]
    code = main(args + quick_args(epochs=2, width=4))
    done = capsys.readouterr()
    assert code == 0, done.err[-3000:]
    report = json.loads((out / "cross_validation.json").read_text())
    assert report["folds"] == 3 and len(report["per_fold"]) == 3
    pool = sum(
        1 for split in ("train", "val")
        for _ in csv.DictReader(open(digits_dataset / "splits" / f"{split}.csv"))
    )  # fmt: skip
    assert sum(f["val_images"] for f in report["per_fold"]) == pool  # each held out once
    accuracies = [f["val_accuracy"] for f in report["per_fold"]]
    assert report["mean"]["val_accuracy"] == pytest.approx(sum(accuracies) / 3, abs=1e-6)
    assert report["std"]["val_accuracy"] >= 0 and "StratifiedGroupKFold" in report["source"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cross_validation"]["mean"] == report["mean"]
    assert (out / "model.keras").is_file()  # the model itself, trained after the folds
    assert json.loads((out / "config.json").read_text())["config"]["cross_validate"] == 3
    assert "cross-validation over 3 folds" in done.err + done.out
