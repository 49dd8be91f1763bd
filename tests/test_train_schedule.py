"""Training options beyond the default fit: two stages, schedules, EMA, accumulation,
custom augmentation, distribution, distillation, determinism."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.infra.errors import UserError
from components.train.config import TrainConfig
from components.vision import augment
from tests.tiny import QUICK, tiny_digits


def test_cosine_schedule_warms_up_linearly_then_decays():
    from components.train.optim import learning_rate

    config = TrainConfig(lr_schedule="cosine", warmup_epochs=2, epochs=10)
    schedule = learning_rate(config, 1e-2, epochs=10, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 10, 20, 60, 100)]
    assert rates[0] == pytest.approx(1e-4)  # starts at 1% of the peak
    assert rates[1] == pytest.approx((1e-4 + 1e-2) / 2, rel=1e-3)  # halfway up, linearly
    assert rates[2] == pytest.approx(1e-2)  # the peak, at the end of warm-up
    assert rates[2] > rates[3] > rates[4]
    assert rates[4] == pytest.approx(1e-4, rel=1e-2)  # decays to alpha * peak

    assert learning_rate(TrainConfig(), 1e-3, 10, 10) == 1e-3  # plateau: a float for ReduceLR
    flat = learning_rate(TrainConfig(lr_schedule="constant", warmup_epochs=1), 1e-3, 10, 10)
    assert float(flat(5)) < float(flat(10)) == pytest.approx(1e-3) == float(flat(90))


def test_optimizer_carries_clipping_accumulation_and_ema():
    from components.train.callbacks import callbacks
    from components.train.optim import make_optimizer

    config = TrainConfig(
        optimizer="lion", clip_norm=1.0, gradient_accumulation_steps=4, ema=True, ema_momentum=0.9
    )
    optimizer = make_optimizer(config, 1e-3)
    assert isinstance(optimizer, keras.optimizers.Lion)
    assert optimizer.global_clipnorm == 1.0
    assert optimizer.gradient_accumulation_steps == 4
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9
    names = [type(c).__name__ for c in callbacks(config, Path("/x"), "stage1", None)]
    # the backup sees raw weights; everything after the swap sees the average
    assert names.index("BackupAndRestore") < names.index("SwapEMAWeights")
    assert names.index("SwapEMAWeights") < names.index("ModelCheckpoint")
    assert "ReduceLROnPlateau" in names  # the default schedule is plateau
    with_schedule = callbacks(TrainConfig(lr_schedule="cosine"), Path("/x"), "stage1", None)
    assert "ReduceLROnPlateau" not in [type(c).__name__ for c in with_schedule]


def test_ema_weights_are_what_validation_checkpoints_and_the_model_see(tmp_path):
    """train.ema: each epoch's val loss, the best checkpoint and the final model are the
    optimizer's moving average, not the raw weights. (Keras' fit copies the average in
    when it ends whatever callbacks run, so checking the final weights alone passed
    without SwapEMAWeights; without it, val loss is the raw weights' and this fails.)"""
    from components.train.callbacks import best_checkpoint, callbacks
    from components.train.optim import make_optimizer

    config = TrainConfig(ema=True, ema_momentum=0.5, early_stopping_patience=5)
    keras.utils.set_random_seed(0)

    def dense():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])

    model = dense()
    model.compile(make_optimizer(config, 0.5), "categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(64) % 3]
    snapshots = []

    class Record(keras.callbacks.Callback):  # first in the list: before the swap
        def on_epoch_end(self, epoch, logs=None):
            average = self.model.optimizer._model_variables_moving_average
            snapshots.append(
                ([np.array(v) for v in average], [np.array(w) for w in self.model.weights])
            )

    work = tmp_path / "work"
    work.mkdir()
    fitted = model.fit(
        x, y, validation_data=(x, y), epochs=4, batch_size=16, verbose=0,
        callbacks=[Record(), *callbacks(config, work, "stage1", None)],
    )  # fmt: skip
    probe = dense()
    probe.compile(loss="categorical_crossentropy")

    def loss_with(weights):
        probe.set_weights(weights)
        return float(probe.evaluate(x, y, verbose=0))

    for epoch, (average, raw) in enumerate(snapshots):
        val = fitted.history["val_loss"][epoch]
        assert val == pytest.approx(loss_with(average), rel=1e-5)
        assert abs(val - loss_with(raw)) > 1e-4  # the two differ: the check can tell
    best = int(np.argmin(fitted.history["val_loss"]))
    probe.load_weights(best_checkpoint(work, "stage1"))
    for saved, average in zip(probe.get_weights(), snapshots[best][0], strict=True):
        np.testing.assert_allclose(saved, average, rtol=1e-6)
    for weight, average in zip(model.get_weights(), snapshots[-1][0], strict=True):
        np.testing.assert_allclose(weight, average, rtol=1e-6)


def test_custom_augmentation_list_with_label_mixing_runs_in_tf_data():
    layers = [
        "RandomShear",
        {"RandomErasing": {"factor": 1.0}},
        {"RandAugment": {"num_ops": 1}},
        {"MixUp": {"alpha": 0.4}},
        "CutMix",
    ]
    config = TrainConfig(augmentation="custom", augmentation_layers=layers)
    augmenter = augment.build(config.augmentation, 3, config.augmentation_layers)
    assert augmenter.layer_names == [
        "RandomShear",
        "RandomErasing",
        "RandAugment",
        "MixUp",
        "CutMix",
    ]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3)).astype("float32")
    labels = np.eye(4, dtype="float32")[np.arange(16) % 4]
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    ds = ds.map(lambda x, y: augmenter(x, y))
    out_images, out_labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    out_images, out_labels = np.concatenate(out_images), np.concatenate(out_labels)
    assert out_images.shape == images.shape and np.isfinite(out_images).all()
    np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, rtol=1e-5)  # still distributions
    assert (out_labels.max(axis=1) < 1).any()  # ...and some are mixed, not one-hot


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (["RandomFlip", "Resizing"], "unknown augmentation layer 'Resizing'"),
        ([{"RandomRotation": {"factr": 0.1}}], "keras.layers.RandomRotation"),
        ([{"RandomFlip": {}, "MixUp": {}}], "one-key mapping"),
    ],
)
def test_bad_custom_augmentation_is_refused_at_config_time(layers, message):
    with pytest.raises(UserError, match=message):
        TrainConfig.from_dict({"augmentation": "custom", "augmentation_layers": layers})
    with pytest.raises(UserError, match="augmentation_layers"):
        TrainConfig.from_dict({"augmentation": "safe", "augmentation_layers": ["RandomFlip"]})


def test_fine_tuning_options_need_a_pretrained_backbone():
    with pytest.raises(UserError, match="fine_tune_epochs"):
        TrainConfig.from_dict({"fine_tune_epochs": 3})  # small_cnn trains in one stage
    with pytest.raises(UserError, match="10-100x lower"):
        TrainConfig.from_dict({"fine_tune_learning_rate_factor": 0.5})
    TrainConfig.from_dict(
        {"model": "MobileNetV3Small", "weights": "imagenet", "fine_tune_epochs": 3}
    )


def test_resnet_mini_is_residual_and_ends_in_our_head():
    from components.train.models import build_model

    model = build_model("resnet_mini", 32, 10, 0.2, width=8)
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 6
    assert model.get_layer("embedding").output.shape[-1] == 32
    out = np.asarray(model(np.zeros((2, 32, 32, 3), "float32"), training=False))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_two_stage_run_freezes_then_unfreezes_with_batchnorm_frozen(
    tmp_path, digits_dataset, monkeypatch
):
    """A backbone with learned weights (a file this test writes, as ImageNet weights cannot
    be downloaded here) trains its head first, then the top layers; BatchNorm statistics
    from the weights file come through both stages unchanged. A run that dies as stage 2
    starts resumes there: stage 1 is not trained again (one history row each).

    All the digits: stage 2 has to lower val loss to be kept (asserted), and on three
    digits of 100 images at batch 32 or 8 it did not in 4 of 6 runs (too few steps, or
    too noisy ones, at the full rate)."""
    from components.train.core import run

    backbone = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), include_preprocessing=True
    )
    # BatchNorm statistics estimated on digits (as pretraining would leave them): with the
    # initial ones (mean 0, variance 1) a random deep net's features are all alike and
    # nothing trains, so stage 2 could never be kept
    from components.train.swa import refresh_batchnorm
    from components.vision.records import load_split_arrays

    pixels = load_split_arrays(digits_dataset, "train", 32)[0][:256].astype("float32")
    refresh_batchnorm(backbone, (pixels[i : i + 64] for i in range(0, 256, 64)))
    weights = tmp_path / "backbone.weights.h5"
    backbone.save_weights(weights)
    config = TrainConfig(
        model="MobileNetV3Small",
        weights=str(weights),
        epochs=1,
        # two epochs at the full rate after one: stage 2 lowers val loss and is kept, so
        # the checks below see its weights (a stage 2 thrown away proves nothing)
        fine_tune_epochs=2,
        fine_tune_learning_rate_factor=1.0,
        fine_tune_layers=20,
        augmentation="none",
        # the one-batch check is test_preflight.py's; here it would only run twice
        preflight="off",
        tensorboard_histograms=False,
    )
    # first attempt dies as stage 2 starts (the on-disk state a kill there leaves)
    from components.train import models

    real = models.set_backbone_trainable

    def dies_in_stage_2(model, top_layers):
        if top_layers is not None:
            raise KeyboardInterrupt("killed")
        return real(model, top_layers)

    monkeypatch.setattr(models, "set_backbone_trainable", dies_in_stage_2)
    with pytest.raises(KeyboardInterrupt):
        run(config, digits_dataset, tmp_path / "model")
    assert (tmp_path / ".model.partial" / "stage1.json").exists()
    monkeypatch.setattr(models, "set_backbone_trainable", real)
    metrics = run(config, digits_dataset, tmp_path / "model")  # resumes at stage 2
    head_only = 576 * 10 + 10  # the Dense head on MobileNetV3Small's 576 features
    assert metrics["trainable_weights"]["stage1"] == head_only
    assert head_only < metrics["trainable_weights"]["stage2"] < 0.5 * backbone.count_params()
    assert metrics["epochs_run"] == 3 and metrics["fine_tune"]["start_epoch"] == 2
    rows = (tmp_path / "model" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2"]
    assert not (tmp_path / "model" / "stage1.weights.h5").exists()

    trained = keras.saving.load_model(tmp_path / "model" / "model.keras", compile=False)
    trained_backbone = trained.get_layer("backbone")
    assert metrics["fine_tune"]["kept"], metrics["fine_tune"]
    checked = 0
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            after = trained_backbone.get_layer(layer.name)
            for name in ("gamma", "beta", "moving_mean", "moving_variance"):
                np.testing.assert_array_equal(
                    np.asarray(getattr(layer, name)), np.asarray(getattr(after, name)), name
                )
            checked += 1
    assert checked > 30
    # the top layers changed in stage 2 (the head alone trains in stage 1), the bottom not
    first_conv = backbone.get_layer("conv")
    np.testing.assert_array_equal(
        np.asarray(first_conv.kernel), np.asarray(trained_backbone.get_layer("conv").kernel)
    )
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    for conv in convs[-2:]:
        before = np.asarray(conv.kernel)
        after = np.asarray(trained_backbone.get_layer(conv.name).kernel)
        assert np.abs(after - before).max() > 1e-4, conv.name


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, digits_dataset):
    """Two logical CPU devices must be declared before TensorFlow starts: a fresh process.
    On the ten digits (chance is 0.1), so two epochs clearing 0.2 says it learned."""
    script = textwrap.dedent(
        f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        from components.train.config import TrainConfig
        from components.train.core import run
        metrics = run(
            TrainConfig(epochs=2, distribute="mirrored", early_stopping_patience=2, **{QUICK!r}),
            {str(digits_dataset)!r},
            {str(tmp_path / "model")!r},
        )
        print("METRICS", json.dumps(metrics))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.split("METRICS", 1)[1])
    assert metrics["replicas"] == 2
    assert metrics["val_accuracy"] > 0.2  # it learns across the two replicas
    assert (tmp_path / "model" / "model.keras").exists()


@pytest.mark.slow
def test_same_seed_same_weights_on_cpu(tmp_path_factory, tmp_path):
    """Two runs of the tiny digits with the same seed, augmentation on: bit-for-bit
    equality is a property of every step, so 63 images show it as well as 1,257."""
    from components.train.core import run

    dataset = tiny_digits(tmp_path_factory.mktemp("seeded"))
    config = TrainConfig(epochs=1, augmentation="safe", **{**QUICK, "width": 4})
    first = run(config, dataset, tmp_path / "a")
    second = run(config, dataset, tmp_path / "b")
    assert first["deterministic"] is True
    assert first["val_loss"] == second["val_loss"]
    a = keras.saving.load_model(tmp_path / "a" / "model.keras", compile=False)
    b = keras.saving.load_model(tmp_path / "b" / "model.keras", compile=False)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))


def test_distillation_loss_is_the_label_loss_when_the_student_matches_the_teacher():
    from components.train.distill import Distiller

    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    distiller = Distiller(student, teacher, temperature=3.0, alpha=0.25)
    distiller.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy())
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(8) % 3]
    hard = float(keras.losses.CategoricalCrossentropy()(y, teacher(x)))
    same = float(distiller.compute_loss(x, y, teacher(x), training=True))
    assert same == pytest.approx(0.25 * hard, rel=1e-4)  # KL(teacher || teacher) = 0
    other = float(distiller.compute_loss(x, y, student(x), training=True))
    student_hard = float(keras.losses.CategoricalCrossentropy()(y, student(x)))
    assert other > 0.25 * student_hard  # the teacher term adds a positive KL
    # validation reports the plain label loss
    assert float(distiller.compute_loss(x, y, student(x), training=False)) == pytest.approx(
        student_hard, rel=1e-5
    )


@pytest.mark.slow
def test_distilled_student_reaches_the_teacher(tmp_path, digits_dataset, trained_model):
    """A student with a quarter of the teacher's weights, distilled for 10 epochs, ends
    within 3 points of the teacher's validation accuracy; the saved model is the student."""
    from components.train.core import run

    teacher = json.loads((trained_model / "metrics.json").read_text())
    config = TrainConfig(
        width=8,
        epochs=10,
        early_stopping_patience=10,
        teacher=str(trained_model),
        distillation_temperature=2.0,
        distillation_alpha=0.5,
        preflight="off",  # test_preflight.py's; it is no part of what distillation reaches
        tensorboard_histograms=False,
    )
    metrics = run(config, digits_dataset, tmp_path / "student")
    assert metrics["teacher_val_accuracy"] == pytest.approx(teacher["val_accuracy"], abs=1e-4)
    assert metrics["val_accuracy"] >= metrics["teacher_val_accuracy"] - 0.03
    student = keras.saving.load_model(tmp_path / "student" / "model.keras", compile=False)
    assert student.name == "small_cnn"
    assert (
        student.count_params()
        < 0.3 * keras.saving.load_model(trained_model / "model.keras", compile=False).count_params()
    )


def test_teacher_for_other_data_is_refused(tmp_path, trained_model):
    from components.train.distill import load_teacher

    with pytest.raises(UserError, match="takes 32x32 images"):
        load_teacher(str(trained_model), 64, [str(i) for i in range(10)])
    with pytest.raises(UserError, match="other classes"):
        load_teacher(str(trained_model), 32, ["a", "b"])
    with pytest.raises(UserError, match="no model.keras"):
        load_teacher(str(tmp_path), 32, ["a"])
