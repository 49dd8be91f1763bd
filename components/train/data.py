"""tf.data input pipelines over the prepared TFRecord shards.

  shards -> parallel read -> parse + decode PNG -> cache -> shuffle -> batch
         -> one-hot -> augment (Keras layers, on the CPU; MixUp/CutMix mix labels) -> prefetch

Images stay uint8 until the batch is augmented, so the cache holds the
dataset at one byte per pixel.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from components.common.records import parse_fn, shard_files

AUTOTUNE = tf.data.AUTOTUNE


def split_dataset(
    dataset_dir: str | Path,
    split: str,
    image_size: int,
    num_classes: int,
    batch_size: int,
    *,
    shuffle_buffer: int = 0,
    augment=None,
    seed: int = 0,
    cache: bool = True,
    count: int | None = None,
    limit: int | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images 0..255 (B, S, S, 3), one-hot labels (B, K))."""
    files = shard_files(dataset_dir, split)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8) or None)
    if limit is not None:  # the first `limit` examples only (benchmarks)
        ds = ds.take(limit)
        count = None if count is None else min(count, limit)
    ds = ds.map(parse_fn(image_size), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    if count is not None:  # TFRecords have unknown length; telling Keras gives it epoch sizes
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))

    def to_model_input(images, labels):
        images = tf.cast(images, tf.float32)  # (B, S, S, 3) in 0..255
        labels = tf.one_hot(labels, num_classes)
        if augment is not None:  # an augment.Augmenter: MixUp / CutMix also blend labels
            images, labels = augment(images, labels)
        return images, labels

    ds = ds.map(to_model_input, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
