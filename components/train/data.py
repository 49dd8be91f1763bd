"""tf.data input pipelines over the prepared TFRecord shards.

  shards -> parallel read -> parse + decode PNG -> cache -> shuffle -> batch
         -> one-hot -> augment (Keras layers, on the CPU; MixUp/CutMix mix labels) -> prefetch

Images stay uint8 until the batch is augmented, so the cache holds the
dataset at one byte per pixel. With metadata columns, each record's uri is
looked up (a static hash table) in the split's encoded metadata matrix, and
the batches are ({"image", "metadata"}, labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from components.vision.records import parse_fn, shard_files

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
    cache: bool | str = True,
    count: int | None = None,
    limit: int | None = None,
    metadata: tuple[list[str], np.ndarray] | None = None,
    keep: list[str] | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images 0..255 (B, S, S, 3), one-hot labels (B, K)); with
    `metadata` (uris, float32 (N, M) rows), of ({"image", "metadata" (B, M)}, labels).

    split: one split, or several joined with "+" ("train+val"); keep: only the records
    whose uri is listed (a k-fold member's folds); cache: True or "memory" keeps the
    decoded split in RAM after the first epoch, a path prefix on local disk, False or
    "none" decodes it every epoch."""
    files = [f for name in split.split("+") for f in shard_files(dataset_dir, name)]
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8) or None)
    if limit is not None:  # the first `limit` examples only (benchmarks)
        ds = ds.take(limit)
        count = None if count is None else min(count, limit)
    with_uri = metadata is not None or keep is not None
    ds = ds.map(parse_fn(image_size, with_uri=with_uri), num_parallel_calls=AUTOTUNE)
    if keep is not None:
        kept = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(keep, tf.string), tf.ones(len(keep), tf.int32)
            ),
            default_value=0,
        )
        ds = ds.filter(lambda image, label, uri: kept.lookup(uri) > 0)
        if metadata is None:
            ds = ds.map(lambda image, label, uri: (image, label))
    if metadata is not None:
        ds = ds.map(metadata_lookup(*metadata, split), num_parallel_calls=AUTOTUNE)
    if isinstance(cache, str) and cache not in ("memory", "none"):
        ds = ds.cache(cache)  # a file prefix: the decoded split on local disk
    elif cache and cache != "none":
        ds = ds.cache()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    if count is not None:  # TFRecords have unknown length; telling Keras gives it epoch sizes
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))

    def to_model_input(images, labels, rows=None):
        images = tf.cast(images, tf.float32)  # (B, S, S, 3) in 0..255
        labels = tf.one_hot(labels, num_classes)
        if rows is None:
            if augment is not None:  # an augment.Augmenter: MixUp / CutMix also blend labels
                images, labels = augment(images, labels)
            return images, labels
        if augment is not None:  # ... and the metadata, by the same weights
            images, labels, rows = augment(images, labels, rows)
        return {"image": images, "metadata": rows}, labels

    ds = ds.map(to_model_input, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def metadata_lookup(uris: list[str], matrix: np.ndarray, split: str):
    """A map function (image, label, uri) -> (image, label, metadata row of that uri)."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(uris, tf.string), tf.range(len(uris), dtype=tf.int64)
        ),
        default_value=-1,
    )
    rows = tf.constant(matrix, tf.float32)

    def attach(image, label, uri):
        index = table.lookup(uri)
        tf.debugging.assert_non_negative(
            index, message=f"a {split} record has no row in splits/{split}.csv; re-run prepare"
        )
        return image, label, tf.gather(rows, index)

    return attach
