"""The project's own Keras layers that saved models contain.

A `.keras` file names these by their registered name (`visionpipe>...`); any
process that loads one (evaluate, export, predict, a distillation teacher)
must have imported this module first, which `components.common.models` does.
"""

from __future__ import annotations

import keras

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="visionpipe")
class CaffePreprocess(keras.layers.Layer):
    """RGB 0..255 -> BGR minus the ImageNet channel means (ResNet50, VGG)."""

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=inputs.dtype)
