"""A short digest of what a data source holds now, read from listings only.

The pipeline's first task computes it, uncached, and hands it to prepare,
which is cached on its inputs: unchanged data is a cache hit; an added,
removed or rewritten file gives a new digest and prepare runs again. No image
is opened, so it costs one listing (a `stat` per file on a disk).

  folder          each file's relative path, size and modification time (ns)
  gs:// prefix    each object's name, generation and size, from one listing
  s3://, minio:// each object's name, ETag and size, from one listing
  manifest        the manifest's SHA-256, plus each row's file as above
                  (a row's file that is gone counts as "missing")
  builtin:NAME    a constant per built-in dataset (it ships inside the image)
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections import defaultdict
from collections.abc import Iterable

from components.infra import storage
from components.vision import digits
from components.vision.sources import is_manifest, list_manifest, resolve_source

VERSION = "1"  # bump when what goes into the digest changes


def _digest(kind: str, entries: Iterable[str]) -> str:
    digest = hashlib.sha256(f"visionpipe-fingerprint/{VERSION}/{kind}\n".encode())
    for entry in entries:
        digest.update(entry.encode())
        digest.update(b"\n")
    return f"{kind}-{digest.hexdigest()[:32]}"


def local_stat(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "missing"
    return f"{info.st_size} {info.st_mtime_ns}"


def folder_entries(root: str) -> list[str]:
    if storage.is_remote(root):
        listing = storage.listing(root.rstrip("/") + "/")
        return [f"{storage.relative(uri, root)} {stat}" for uri, stat in sorted(listing.items())]
    return [
        f"{storage.relative(path, root)} {local_stat(path)}" for path in storage.list_files(root)
    ]


def manifest_entries(source: str, root: str) -> list[str]:
    entries = [hashlib.sha256(storage.read_bytes(root)).hexdigest()]
    uris = sorted({item.uri for item in list_manifest(source, root).items})
    remote: dict[str, list[str]] = defaultdict(list)
    for uri in uris:
        if storage.is_remote(uri):
            remote[uri.partition("://")[0] + "://" + storage.split(uri)[1]].append(uri)
    stats: dict[str, str] = {}
    for names in remote.values():  # one listing per bucket, under the rows' common prefix
        stats.update(storage.listing(posixpath.commonprefix(names)))
    for uri in uris:
        stat = stats.get(uri, "missing") if storage.is_remote(uri) else local_stat(uri)
        entries.append(f"{uri} {stat}")
    return entries


def fingerprint(source: str) -> str:
    """The digest of `source` as it is now (see the module docstring)."""
    if digits.is_builtin(source):
        digits.check_builtin(source)
        return _digest("builtin", [str(source), str(digits.EXPECTED_COUNT)])
    root = resolve_source(source)
    if is_manifest(root):
        return _digest("manifest", manifest_entries(source, root))
    return _digest("folder", folder_entries(root))
