"""The names configs accept, without importing Keras: validating a config must not cost a
TensorFlow import (the pipeline's `changes` task, `compile`, `submit` validate every
section). The registries in components/train/models.py and components/vision/augment.py
register exactly these names (registrar's `allowed`; tests/test_config.py checks both
ways)."""

from __future__ import annotations

# keras.applications models: constructor name -> how the family expects its input.
#   "builtin": the model rescales 0..255 itself (include_preprocessing)
#   "tf": scale to -1..1;  "torch": ImageNet mean/std;  "caffe": BGR minus ImageNet means
BACKBONES: dict[str, str] = {
    "MobileNetV3Small": "builtin",
    "MobileNetV3Large": "builtin",
    "MobileNetV2": "tf",
    "EfficientNetB0": "builtin",
    "EfficientNetB1": "builtin",
    "EfficientNetB2": "builtin",
    "EfficientNetB3": "builtin",
    "EfficientNetV2B0": "builtin",
    "EfficientNetV2S": "builtin",
    "EfficientNetV2M": "builtin",
    "ResNet50": "caffe",
    "ResNet50V2": "tf",
    "ConvNeXtTiny": "builtin",
    "DenseNet121": "torch",
    "Xception": "tf",
    "InceptionV3": "tf",
}

FROM_SCRATCH_MODELS = ("small_cnn", "resnet_mini")
AUGMENTATION_PRESETS = ("none", "safe", "light", "medium", "autoaugment", "heavy")


def known_models() -> list[str]:
    return [*FROM_SCRATCH_MODELS, *BACKBONES]
