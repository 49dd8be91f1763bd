"""The project's own Keras layers that saved models contain.

A `.keras` file names these by their registered name (`visionpipe>...`); any
process that loads one (evaluate, export, predict, a distillation teacher)
must have imported this module first, which `components.vision.models` does.
"""

from __future__ import annotations

import keras

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="visionpipe")
class CaffePreprocess(keras.layers.Layer):
    """RGB 0..255 -> BGR minus the ImageNet channel means (ResNet50, VGG)."""

    def call(self, inputs):
        # a strided slice, not flip: flip becomes ONNX ReverseSequence (and Split/Concat or
        # Gather stay put too), which tf2onnx's transpose optimizer cannot move, leaving an
        # NHWC<->NCHW pair around it in model.onnx; a Slice with step -1 it moves through
        bgr = inputs[..., ::-1]
        return bgr - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=inputs.dtype)


@keras.saving.register_keras_serializable(package="visionpipe")
class TemperatureScaling(keras.layers.Layer):
    """Softmax probabilities p -> softmax(log(p) / T): the same as dividing the logits by
    the temperature T (softmax is invariant to the log-sum-exp shift), so it can follow
    any model's softmax. The top-1 class never changes. T is fitted on val by evaluate."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probabilities):
        tiny = keras.ops.cast(1e-30, probabilities.dtype)
        logits = keras.ops.log(keras.ops.maximum(probabilities, tiny))
        return keras.ops.softmax(logits / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
