"""Stochastic Weight Averaging (Izmailov et al., 2018), as the lecture names it.

From epoch `start` (1-based) of the last fitting stage on, the weights at the end of
every epoch are averaged (a running mean). When the fit ends the model takes the
average, and BatchNorm's moving statistics, which belong to none of the averaged
models, are estimated afresh with one pass over the train split (without augmentation:
what inference sees): each BN layer's moving mean and variance become the average of
its batch means and batch variances over that pass (a cumulative average, momentum
(k-1)/k at batch k, as torch.optim.swa_utils.update_bn does).

The running mean is saved in the work folder after each epoch (`swa.npz`), so a
resumed fit goes on averaging where the killed one stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def batchnorm_layers(model) -> list:
    """The trainable BatchNormalization layers, nested models included."""
    import keras

    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        elif hasattr(layer, "layers"):
            found += batchnorm_layers(layer)
    return found


def refresh_batchnorm(model, batches) -> int:
    """Re-estimate the moving statistics of the model's trainable BatchNorm layers from
    `batches` (model inputs); returns the number of batches used. Frozen BN layers (a
    fine-tuned backbone's) keep theirs: they never trained on this data."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    count = 0
    try:
        for x in batches:
            count += 1
            for layer in layers:  # moving = moving * (k-1)/k + batch / k: the running mean
                layer.momentum = (count - 1) / count
            model(x, training=True)  # eager: each call reads the momentum set above
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return count


def swa_callback(start: int, work: Path, refresh_batches, model_for_bn):
    """The Keras callback; averaging from epoch `start` (1-based, absolute);
    `refresh_batches()` yields the inputs that re-estimate `model_for_bn`'s BatchNorm
    statistics (the student itself when a Distiller is fitted)."""
    import keras

    class StochasticWeightAveraging(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.path = work / "swa.npz"
            self.start = start
            self.mean: list[np.ndarray] | None = None
            self.count = 0
            self.epochs: list[int] = []
            self.bn_batches = 0

        def on_train_begin(self, logs=None):
            if self.path.exists():  # a resumed fit: go on with the saved average
                saved = np.load(self.path)
                self.count = int(saved["count"])
                self.epochs = [int(e) for e in saved["epochs"]]
                self.mean = [saved[f"w{i}"] for i in range(int(saved["n"]))]

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 < start or (epoch + 1) in self.epochs:
                return
            weights = [np.asarray(w, dtype=np.float64) for w in self.model.get_weights()]
            self.count += 1
            if self.mean is None:
                self.mean = weights
            else:
                self.mean = [
                    m + (w - m) / self.count for m, w in zip(self.mean, weights, strict=True)
                ]
            self.epochs.append(epoch + 1)
            arrays = {f"w{i}": m for i, m in enumerate(self.mean)}
            tmp = self.path.with_suffix(".tmp.npz")
            np.savez(
                tmp, count=self.count, n=len(self.mean), epochs=np.array(self.epochs), **arrays
            )
            tmp.replace(self.path)

        def on_train_end(self, logs=None):
            if self.mean is None:
                return
            current = self.model.get_weights()
            self.model.set_weights(
                [m.astype(c.dtype) for m, c in zip(self.mean, current, strict=True)]
            )
            self.bn_batches = refresh_batchnorm(model_for_bn, refresh_batches())

    return StochasticWeightAveraging()
