"""Pictures in TensorBoard: the PNGs a stage already writes, as image summaries.

Scalars, weight histograms, the model graph and the optional profile come from
Keras' TensorBoard callback in train (components/train/callbacks.py); this adds
the images: train's augmentation preview beside its scalars, and evaluate's
confusion matrix and error gallery in `<evaluation>/tensorboard/`, so
`tensorboard --logdir <run folder>` shows both stages.
"""

from __future__ import annotations

from pathlib import Path


def write_images(logdir: Path, images: dict[str, Path], step: int = 0) -> list[str]:
    """Each existing PNG as an image summary named by its key; the names written."""
    import tensorflow as tf

    written = []
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for name, path in images.items():
            if not Path(path).is_file():
                continue
            picture = tf.io.decode_png(Path(path).read_bytes(), channels=3)
            tf.summary.image(name, picture[None], step=step)
            written.append(name)
    writer.close()
    return written
