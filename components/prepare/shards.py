"""Writing a split as TFRecord shards of fixed-size PNG images.

Decoding and resizing (the expensive part) run in worker processes; the
parent only frames the records, so memory holds one chunk of encoded images
at a time, never the dataset.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from components.infra import storage
from components.prepare.scan import SPAWN
from components.vision.images import ImageLimits, encode_png, load_rgb, resize_square


def encode_item(uri: str, size: int, limits: ImageLimits) -> bytes:
    image = load_rgb(storage.read_bytes(uri), limits)
    return encode_png(resize_square(image, size))


def _encode_star(args: tuple[str, int, ImageLimits]) -> bytes:
    return encode_item(*args)


def shard_count(rows: int, shard_size: int) -> int:
    return max(1, math.ceil(rows / shard_size))


def write_split(
    folder: Path,
    split: str,
    rows: list[dict],
    size: int,
    limits: ImageLimits,
    shard_size: int,
    workers: int,
    progress,
    only: set[int] | None = None,
) -> list[str]:
    """Write `rows` (uri, label_index, sha256) as `{split}-NNNNN-of-MMMMM.tfrecord` files:
    shard k holds rows k*shard_size .. (k+1)*shard_size-1, so a subset of shards (`only`,
    what one fan-out task writes) holds exactly what the whole split writes there."""
    from components.vision.records import make_example
    from components.vision.tfrecord import RecordWriter

    folder.mkdir(parents=True, exist_ok=True)
    n_shards = shard_count(len(rows), shard_size)
    chosen = [k for k in range(n_shards) if only is None or k in only]
    names = [f"{split}-{k:05d}-of-{n_shards:05d}.tfrecord" for k in chosen]
    mine = [(k, row) for k in chosen for row in rows[k * shard_size : (k + 1) * shard_size]]
    jobs = [(row["uri"], size, limits) for _, row in mine]
    if workers > 1 and len(jobs) >= 64:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=SPAWN)
        encoded = pool.map(_encode_star, jobs, chunksize=max(1, min(64, len(jobs) // workers)))
    else:
        pool = None
        encoded = (encode_item(*job) for job in jobs)
    try:
        writer, current = None, None
        for (k, row), png in progress(zip(mine, encoded, strict=True), len(mine)):
            if k != current:
                if writer is not None:
                    writer.close()
                writer = RecordWriter(folder / f"{split}-{k:05d}-of-{n_shards:05d}.tfrecord")
                current = k
            writer.write(make_example(png, row["label_index"], row["sha256"], row["uri"]))
        if writer is not None:
            writer.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return names
