"""SWA: the saved weights are the mean of the epoch snapshots, and BatchNorm's statistics
are a fresh estimate over the train batches; real Keras training on real digits."""

import numpy as np
import pytest

from components.infra.errors import UserError
from components.train.config import TrainConfig
from components.train.swa import swa_callback


@pytest.fixture(scope="module")
def digits_arrays(digits_dataset):
    from components.vision.records import load_split_arrays

    images, labels, _ = load_split_arrays(digits_dataset, "train", 32)
    return images[:256].astype(np.float32), np.eye(10, dtype=np.float32)[labels[:256]]


def small_model():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    return model


class Snapshots:
    """Records the weights at each epoch end, before SWA sees them."""

    def __new__(cls):
        import keras

        class Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.weights = {}

            def on_epoch_end(self, epoch, logs=None):
                self.weights[epoch + 1] = [np.array(w) for w in self.model.get_weights()]

        return Recorder()


def batches_of(x, size=64):
    return lambda: (x[i : i + size] for i in range(0, len(x), size))


def fresh_bn_estimate(model, x, size=64):
    """The BN layer's input, batch by batch: the average of batch means and variances."""
    import keras

    upstream = keras.Model(model.inputs[0], model.get_layer("bn").input)
    means, variances = [], []
    for i in range(0, len(x), size):
        activations = np.asarray(upstream(x[i : i + size]), dtype=np.float64)
        means.append(activations.mean(axis=(0, 1, 2)))
        variances.append(activations.var(axis=(0, 1, 2)))
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def test_the_average_of_the_snapshots_with_batchnorm_estimated_afresh(tmp_path, digits_arrays):
    x, y = digits_arrays
    model = small_model()
    recorder = Snapshots()
    swa = swa_callback(2, tmp_path, batches_of(x), model)
    model.fit(x, y, epochs=4, batch_size=32, callbacks=[recorder, swa], verbose=0)
    assert swa.epochs == [2, 3, 4] and swa.bn_batches == 4
    bn = model.get_layer("bn")
    statistics = {id(bn.moving_mean), id(bn.moving_variance)}
    for index, (variable, value) in enumerate(zip(model.weights, model.get_weights(), strict=True)):
        if id(variable) in statistics:
            continue
        expected = np.mean([recorder.weights[e][index] for e in (2, 3, 4)], axis=0)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=variable.path)
    mean, variance = fresh_bn_estimate(model, x)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), variance, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.9  # put back after the pass


def test_a_resumed_fit_goes_on_averaging(tmp_path, digits_arrays):
    x, y = digits_arrays
    model = small_model()
    recorder = Snapshots()
    first = swa_callback(1, tmp_path, batches_of(x), model)
    model.fit(x, y, epochs=2, batch_size=32, callbacks=[recorder, first], verbose=0)
    model.set_weights(recorder.weights[2])  # as BackupAndRestore would: the last epoch
    second = swa_callback(1, tmp_path, batches_of(x), model)  # a new process, same folder
    model.fit(
        x, y, initial_epoch=2, epochs=3, batch_size=32, callbacks=[recorder, second], verbose=0
    )
    assert second.epochs == [1, 2, 3]
    kernel = [i for i, v in enumerate(model.weights) if v.path == "conv/kernel"][0]
    expected = np.mean([recorder.weights[e][kernel] for e in (1, 2, 3)], axis=0)
    np.testing.assert_allclose(model.get_weights()[kernel], expected, rtol=1e-5, atol=1e-6)


def test_swa_settings_are_checked():
    with pytest.raises(UserError, match="SWA and EMA"):
        TrainConfig.from_dict({"swa_start": 3, "ema": True})
    with pytest.raises(UserError, match="swa_start"):
        TrainConfig.from_dict({"swa_start": 50, "epochs": 40})


@pytest.mark.slow
def test_the_train_stage_saves_the_average(tmp_path):
    """The stage's plumbing (which epochs were averaged, the BatchNorm pass, what is kept
    and cleaned up) on the tiny digits: the averaging itself is checked above."""
    import json

    from components.train.core import run
    from tests.tiny import QUICK, tiny_digits

    config = TrainConfig(epochs=3, swa_start=2, **QUICK)
    metrics = run(config, tiny_digits(tmp_path / "tiny"), tmp_path / "m")
    assert metrics["swa"]["epochs_averaged"] == [2, 3] and metrics["swa"]["bn_batches"] > 0
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["swa"] == metrics["swa"]
    assert not (tmp_path / "m" / "swa.npz").exists()
