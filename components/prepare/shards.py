"""Writing a split as TFRecord shards of fixed-size PNG images.

Decoding and resizing (the expensive part) run in worker processes; the
parent only frames the records, so memory holds one chunk of encoded images
at a time, never the dataset.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from components.common import storage
from components.common.images import ImageLimits, encode_png, load_rgb, resize_square
from components.prepare.scan import SPAWN


def encode_item(uri: str, size: int, limits: ImageLimits) -> bytes:
    image = load_rgb(storage.read_bytes(uri), limits)
    return encode_png(resize_square(image, size))


def _encode_star(args: tuple[str, int, ImageLimits]) -> bytes:
    return encode_item(*args)


def write_split(
    folder: Path,
    split: str,
    rows: list[dict],
    size: int,
    limits: ImageLimits,
    shard_size: int,
    workers: int,
    progress,
) -> list[str]:
    """Write `rows` (uri, label_index, sha256) as `{split}-NNNNN-of-MMMMM.tfrecord` files."""
    import tensorflow as tf

    from components.common.records import make_example

    folder.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, math.ceil(len(rows) / shard_size))
    names = [f"{split}-{i:05d}-of-{n_shards:05d}.tfrecord" for i in range(n_shards)]
    jobs = [(row["uri"], size, limits) for row in rows]
    if workers > 1 and len(jobs) >= 64:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=SPAWN)
        encoded = pool.map(_encode_star, jobs, chunksize=max(1, min(64, len(jobs) // workers)))
    else:
        pool = None
        encoded = (encode_item(*job) for job in jobs)
    try:
        writer = None
        for index, (row, png) in enumerate(progress(zip(rows, encoded, strict=True), len(rows))):
            if index % shard_size == 0:
                if writer is not None:
                    writer.close()
                writer = tf.io.TFRecordWriter(str(folder / names[index // shard_size]))
            writer.write(make_example(png, row["label_index"], row["sha256"], row["uri"]))
        if writer is not None:
            writer.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return names
