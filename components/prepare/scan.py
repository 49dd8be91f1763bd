"""Checking each labelled image of a source: read, hash, decode, in parallel.

Listing the source (`components.vision.sources`) is cheap and happens first;
decoding every file (`inspect_all`) comes after.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from components.infra import storage
from components.vision.images import ImageLimits, ImageRejected, load_rgb
from components.vision.sources import Listing

# spawn, not fork: the parent may hold TensorFlow's threads, which fork would break
SPAWN = multiprocessing.get_context("spawn")


@dataclass
class Inspected:
    uri: str
    label: str
    sha256: str = ""
    width: int = 0
    height: int = 0
    dhash: int = 0  # 64-bit perceptual difference hash of the decoded image
    thumb: bytes = b""  # 16x16 grayscale, to confirm near-duplicate candidates
    rejected: str = ""  # the reason, when the file cannot be used


def difference_hash(image) -> int:
    """dHash: 64 bits of left-vs-right brightness on a 9x8 grayscale thumbnail."""
    from PIL import Image

    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def thumbnail(image) -> bytes:
    from PIL import Image

    return image.convert("L").resize((16, 16), Image.Resampling.BILINEAR).tobytes()


def inspect_file(uri: str, label: str, limits: ImageLimits) -> Inspected:
    """Read, hash and fully decode one file, as training will."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:  # storage.NotFound too: an object a manifest lists, not there
        return Inspected(uri, label, rejected="file not found")
    except OSError as error:
        return Inspected(uri, label, rejected=f"unreadable: {error}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = load_rgb(data, limits)
    except ImageRejected as error:
        return Inspected(uri, label, sha256=digest, rejected=str(error))
    return Inspected(
        uri, label, digest, image.width, image.height, difference_hash(image), thumbnail(image)
    )


def _inspect_star(args: tuple[str, str, ImageLimits]) -> Inspected:
    return inspect_file(*args)


def worker_count(requested: int) -> int:
    """`prepare.workers`, or the CPUs the pod may use (its cgroup quota, not the node's)."""
    from components.infra.resources import cpu_limit

    return requested or cpu_limit()


def inspect_all(listing: Listing, limits: ImageLimits, workers: int, progress) -> list[Inspected]:
    """Inspect every listed file in parallel, keeping the listing's order."""
    jobs = [(item.uri, item.label, limits) for item in listing.items]
    chunk = max(1, min(256, len(jobs) // (8 * max(1, workers))))
    if workers <= 1 or len(jobs) < 64:
        return [inspect_file(*job) for job in progress(jobs, len(jobs))]
    with ProcessPoolExecutor(max_workers=workers, mp_context=SPAWN) as pool:
        return list(progress(pool.map(_inspect_star, jobs, chunksize=chunk), len(jobs)))
