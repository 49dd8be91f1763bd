"""Finding the labelled images of a source and checking each one.

A source is a folder (or `gs://` prefix) of class sub-folders, or
`builtin:digits`. Listing is cheap and happens first, so that a wrong path or
a folder without classes is refused in a second with one clear line; decoding
every file (`inspect_all`) comes after.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from components.common import digits, storage
from components.common.errors import UserError
from components.common.images import (
    IMAGE_EXTENSIONS,
    ImageLimits,
    ImageRejected,
    is_image_name,
    load_rgb,
)

# spawn, not fork: the parent may hold TensorFlow's threads, which fork would break
SPAWN = multiprocessing.get_context("spawn")


@dataclass
class Listing:
    """What a source holds before any file is opened."""

    source: str  # as the user gave it
    root: str  # the folder or prefix it resolved to
    items: list[tuple[str, str]]  # (uri, class name) of every image-named file
    ignored: list[dict[str, str]] = field(default_factory=list)  # other files, with the reason

    @property
    def classes(self) -> list[str]:
        return sorted({label for _, label in self.items})


def resolve_source(source: str) -> str:
    if not source or not str(source).strip():
        raise UserError("no data source given; pass --data DIR (a folder of class sub-folders)")
    if digits.is_builtin(source):
        return digits.resolve_builtin(source)
    if storage.is_gcs(source):
        return str(source).rstrip("/")
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"data folder {source!r} does not exist; pass --data DIR with one sub-folder per class"
        )
    if not path.is_dir():
        raise UserError(
            f"data source {source!r} is a file, not a folder; pass a folder with one "
            "sub-folder per class"
        )
    return str(path.resolve())


def list_source(source: str) -> Listing:
    """List a class-folder source; refuse an empty one or one with fewer than two classes."""
    root = resolve_source(source)
    items: list[tuple[str, str]] = []
    ignored: list[dict[str, str]] = []
    for uri in storage.list_files(root):
        parts = storage.relative(uri, root).split("/")
        if len(parts) < 2:
            ignored.append({"uri": uri, "reason": "not inside a class sub-folder"})
        elif not is_image_name(parts[-1]):
            ignored.append({"uri": uri, "reason": "file extension is not an image extension"})
        else:
            items.append((uri, parts[0]))
    if not items:
        raise UserError(
            f"no images found in {source!r} (looked for {', '.join(IMAGE_EXTENSIONS)} files "
            "inside class sub-folders); pass a folder laid out as DIR/<class>/<image>"
        )
    listing = Listing(source=str(source), root=root, items=items, ignored=ignored)
    if len(listing.classes) < 2:
        raise UserError(
            f"found only {len(listing.classes)} class ({listing.classes[0]!r}) in {source!r}; "
            "a classifier needs at least 2 class sub-folders"
        )
    return listing


@dataclass
class Inspected:
    uri: str
    label: str
    sha256: str = ""
    width: int = 0
    height: int = 0
    rejected: str = ""  # the reason, when the file cannot be used


def inspect_file(uri: str, label: str, limits: ImageLimits) -> Inspected:
    """Read, hash and fully decode one file, as training will."""
    try:
        data = storage.read_bytes(uri)
    except OSError as error:
        return Inspected(uri, label, rejected=f"unreadable: {error}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = load_rgb(data, limits)
    except ImageRejected as error:
        return Inspected(uri, label, sha256=digest, rejected=str(error))
    return Inspected(uri, label, digest, image.width, image.height)


def _inspect_star(args: tuple[str, str, ImageLimits]) -> Inspected:
    return inspect_file(*args)


def worker_count(requested: int) -> int:
    return requested or max(1, len(os.sched_getaffinity(0)))


def inspect_all(listing: Listing, limits: ImageLimits, workers: int, progress) -> list[Inspected]:
    """Inspect every listed file in parallel, keeping the listing's order."""
    jobs = [(uri, label, limits) for uri, label in listing.items]
    chunk = max(1, min(256, len(jobs) // (8 * max(1, workers))))
    if workers <= 1 or len(jobs) < 64:
        return [inspect_file(*job) for job in progress(jobs, len(jobs))]
    with ProcessPoolExecutor(max_workers=workers, mp_context=SPAWN) as pool:
        return list(progress(pool.map(_inspect_star, jobs, chunksize=chunk), len(jobs)))


def class_counts(records: list[Inspected]) -> Counter:
    return Counter(r.label for r in records)
