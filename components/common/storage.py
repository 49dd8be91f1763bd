"""Reading and listing files on a local disk or in Cloud Storage (`gs://bucket/prefix`).

Everything that takes a data or model location goes through these functions,
so a stage runs unchanged on a laptop and against a bucket. Cloud Storage uses
`google-cloud-storage` (application-default credentials, or the emulator named
by `STORAGE_EMULATOR_HOST`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

from components.common.errors import UserError

GCS_PREFIX = "gs://"


def is_gcs(uri: str) -> bool:
    return str(uri).startswith(GCS_PREFIX)


def split_gcs(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> (`bucket`, `a/b`)."""
    rest = str(uri)[len(GCS_PREFIX) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"{uri!r} names no bucket; expected gs://BUCKET/PATH")
    return bucket, key


def retry_policy():
    """Retry 429, 5xx and connection errors with exponential backoff (0.5 s doubling, 2 min).

    Writes too: every write here replaces a whole object with the same bytes,
    so repeating one is safe (the library retries uploads only when told).
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.5, maximum=16.0).with_timeout(120.0)


@functools.lru_cache(maxsize=1)
def gcs_client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "visionpipe-test"),
            credentials=AnonymousCredentials(),
        )
    return storage.Client()


def read_bytes(uri: str) -> bytes:
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        return gcs_client().bucket(bucket).blob(key).download_as_bytes(retry=retry_policy())
    return Path(uri).read_bytes()


def write_bytes(uri: str, data: bytes) -> None:
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        gcs_client().bucket(bucket).blob(key).upload_from_string(data, retry=retry_policy())
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def copy_file(local: str | Path, uri: str) -> None:
    """Copy a local file to a local path or gs:// URI (streamed, not read into memory)."""
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        gcs_client().bucket(bucket).blob(key).upload_from_filename(str(local), retry=retry_policy())
        return
    import shutil

    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(uri).with_name(Path(uri).name + ".partial")
    shutil.copyfile(local, tmp)
    os.replace(tmp, uri)


def exists(uri: str) -> bool:
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        return gcs_client().bucket(bucket).blob(key).exists(retry=retry_policy())
    return Path(uri).exists()


def list_files(uri: str) -> Iterator[str]:
    """Every file under a folder or prefix, recursively, in sorted order."""
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        names = sorted(
            blob.name
            for blob in gcs_client().list_blobs(bucket, prefix=prefix, retry=retry_policy())
            if not blob.name.endswith("/")
        )
        yield from (f"{GCS_PREFIX}{bucket}/{name}" for name in names)
        return
    root = Path(uri)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def relative(uri: str, root: str) -> str:
    """`uri` relative to `root` with forward slashes (both local or both gs://)."""
    root = str(root).rstrip("/")
    return str(uri)[len(root) + 1 :] if str(uri).startswith(root + "/") else str(uri)
