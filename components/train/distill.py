"""Knowledge distillation: a student learns from labels and from a trained teacher's soft targets.

Hinton et al. (2015): loss = alpha * CE(labels, student)
                            + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
Our models end in a float32 softmax, not logits; log-probabilities are logits
up to a per-row constant, which softmax ignores, so dividing log p by T gives
the same tempered distributions. The teacher sees the same augmented batch
as the student and never trains. Validation reports the plain label loss,
so val_loss stays comparable with a run without a teacher.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import ops

from components.infra.errors import UserError
from components.vision import metadata

EPSILON = 1e-7


def load_teacher(path: str, image_size: int, classes: list[str], encoder=None) -> keras.Model:
    """A trained model folder (or its model.keras) whose input and classes match this dataset.

    The teacher may take images only, or images and the same metadata as the student."""
    from components.infra.artifacts import read_json
    from components.train.models import image_size_of

    folder = Path(path)
    model_file = folder / "model.keras" if folder.is_dir() else folder
    if not model_file.is_file():
        raise UserError(
            f"train config teacher={path!r}: no model.keras there; "
            "pass the output folder of an earlier `visionpipe train`"
        )
    from components.vision.models import load_model

    teacher = load_model(model_file)  # a corrupt or unsafe file is one line, not a traceback
    side = image_size_of(teacher)
    if side is not None and side != image_size:
        raise UserError(
            f"train config teacher={path!r} takes {side}x{side} images but this dataset has "
            f"{image_size}x{image_size}; distil from a teacher trained on the same prepared data"
        )
    classes_file = model_file.parent / "classes.json"
    if classes_file.is_file() and read_json(classes_file) != classes:
        raise UserError(
            f"train config teacher={path!r} was trained on other classes "
            f"({classes_file}); distil from a teacher trained on the same prepared data"
        )
    if metadata.takes_metadata(teacher):
        theirs = metadata.load(model_file.parent)
        if encoder is None or theirs is None or theirs.to_dict() != encoder.to_dict():
            raise UserError(
                f"train config teacher={path!r} takes metadata columns "
                f"({', '.join(theirs.features) if theirs else 'unknown'}) that this student "
                "does not get in the same encoding; give the student the teacher's "
                "metadata_columns on the same prepared data, or use an image-only teacher"
            )
    teacher.trainable = False
    return teacher


class Distiller(keras.Model):
    """Wraps the student for `fit`; save `distiller.student`, never the wrapper."""

    def __init__(self, student, teacher, temperature: float, alpha: float, **kwargs):
        super().__init__(name="distiller", **kwargs)
        self.student = student
        self.teacher = teacher
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def teacher_inputs(self, x):
        """An image-only teacher of a student that also takes metadata sees the images."""
        if isinstance(x, dict) and not metadata.takes_metadata(self.teacher):
            return x["image"]
        return x

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # the compiled loss on the labels, already scaled for distribution strategies
        hard = super().compute_loss(x, y, y_pred, sample_weight, training)
        if not training:
            return hard
        t = self.temperature
        teacher_probs = ops.cast(self.teacher(self.teacher_inputs(x), training=False), "float32")
        student_probs = ops.cast(y_pred, "float32")
        teacher_soft = ops.softmax(ops.log(teacher_probs + EPSILON) / t, axis=-1)
        student_log_soft = ops.log_softmax(ops.log(student_probs + EPSILON) / t, axis=-1)
        kl = ops.sum(teacher_soft * (ops.log(teacher_soft + EPSILON) - student_log_soft), axis=-1)
        soft = ops.mean(kl) * (t * t) / replicas()
        return self.alpha * hard + (1.0 - self.alpha) * soft


def replicas() -> int:
    """Replicas in sync: Keras divides the label loss by it under a strategy; so do we."""
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync
