"""The overfit-one-batch check stops once the batch's loss has dropped enough, and a
model that cannot learn still takes every step and fails (components/train/preflight.py)."""

from types import SimpleNamespace

import numpy as np
import pytest


@pytest.mark.parametrize("learning_rate, learns", [(2e-3, True), (1e-9, False)])
def test_the_check_stops_when_the_loss_has_dropped_and_not_before(learning_rate, learns):
    """One real batch of 32 digits (8x8, width-1 dense model): at 2e-3 the loss drops 20%
    within tens of steps, at 1e-9 it cannot move (the rate preflight exists to catch)."""
    import keras
    from sklearn.datasets import load_digits

    from components.train.config import TrainConfig
    from components.train.preflight import overfit_one_batch

    digits = load_digits()
    x = (digits.images[:32, :, :, None] / 16.0).astype("float32")
    y = np.eye(10, dtype="float32")[digits.target[:32]]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.1),  # a random state the check must put back
            keras.layers.Dense(10),
        ]
    )
    model.layers[-1].activation = keras.activations.softmax
    config = TrainConfig(learning_rate=learning_rate, preflight_steps=100)
    before = [v.numpy().copy() for v in model.variables]  # weights and random states
    record, norms = overfit_one_batch(SimpleNamespace(config=config, model=model), x, y)
    assert record["passed"] is learns and record["max_steps"] == 100
    if learns:
        assert 6 <= record["steps"] < 100, record  # stopped early, on the bar
        assert record["loss_drop"] >= config.preflight_min_loss_drop
    else:
        assert record["steps"] == 100 and record["loss_drop"] < 0.2, record
    assert norms  # the first step's gradient norms, per layer
    assert len(model.variables) > len(model.weights)  # the dropout's seed state is there
    for kept, now in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(kept, now.numpy())  # all put back: the fit is unmoved
