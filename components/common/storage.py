"""Reading and listing files on a local disk or in Cloud Storage (`gs://bucket/prefix`).

Everything that takes a data or model location goes through these functions,
so a stage runs unchanged on a laptop and against a bucket. Cloud Storage uses
`google-cloud-storage` (application-default credentials, or the emulator named
by `STORAGE_EMULATOR_HOST`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from google.api_core.exceptions import NotFound  # noqa: F401  (the client's "no such object")

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


def download_file(uri: str, local: str | Path) -> None:
    """Copy a local path or gs:// object to a local file (streamed, not read into memory)."""
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        blob = gcs_client().bucket(bucket).blob(key)
        blob.download_to_filename(str(local), retry=retry_policy())
        return
    import shutil

    shutil.copyfile(uri, local)


def delete(uri: str) -> None:
    """Remove a file or object; one that is already gone is not an error."""
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        with contextlib.suppress(NotFound):
            gcs_client().bucket(bucket).blob(key).delete(retry=retry_policy())
        return
    Path(uri).unlink(missing_ok=True)


def delete_tree(uri: str) -> int:
    """Remove every file under a folder or prefix; the number removed."""
    files = list(list_files(uri)) if is_gcs(uri) or Path(uri).is_dir() else []
    for name in files:
        delete(name)
    if not is_gcs(uri) and Path(uri).is_dir():
        import shutil

        shutil.rmtree(uri, ignore_errors=True)
    return len(files)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write `uri` only if nothing is there yet; False when it already exists.

    Cloud Storage: a generation precondition of 0 (`if_generation_match=0`). A local
    file: hard-linking a complete temporary file to the name, which fails if it exists.
    """
    if is_gcs(uri):
        from google.api_core.exceptions import PreconditionFailed

        bucket, key = split_gcs(uri)
        blob = gcs_client().bucket(bucket).blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=0, retry=retry_policy())
        except PreconditionFailed:
            # a retried request whose first attempt did land reads back our own bytes
            return read_bytes(uri) == data
        return True
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.partial")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def read_versioned(uri: str) -> tuple[bytes | None, object]:
    """The content of `uri` (None when absent) and a token for `write_if_unchanged`."""
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        blob = gcs_client().bucket(bucket).get_blob(key, retry=retry_policy())
        if blob is None:
            return None, 0
        generation = int(blob.generation)  # before the download, which may reset it
        return blob.download_as_bytes(retry=retry_policy()), generation
    path = Path(uri)
    if not path.exists():
        return None, None
    data = path.read_bytes()
    return data, data


def write_if_unchanged(uri: str, data: bytes, token: object) -> bool:
    """Replace `uri` only if it is still what `read_versioned` saw; False when another
    writer changed it in between (read again and decide again).

    Cloud Storage: `if_generation_match` on the generation read. A local file: under an
    exclusive lock on `.<name>.lock` beside it, compare, then replace atomically.
    """
    if is_gcs(uri):
        from google.api_core.exceptions import PreconditionFailed

        bucket, key = split_gcs(uri)
        blob = gcs_client().bucket(bucket).blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=token, retry=retry_policy())
        except PreconditionFailed:
            return False
        return True
    import fcntl

    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = path.read_bytes() if path.exists() else None
        if current != token:
            return False
        write_bytes(uri, data)
    return True


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
    # symlinked folders are followed, each real folder once: a link back up the tree
    # (class_a/loop -> ..) would otherwise be walked again and again
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real not in seen:
                seen.add(real)
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def is_empty(uri: str) -> bool:
    """Nothing at all under a folder or prefix (or no such folder)."""
    if not is_gcs(uri) and not Path(uri).is_dir():
        return not Path(uri).exists()
    return next(iter(list_files(uri)), None) is None


def relative(uri: str, root: str) -> str:
    """`uri` relative to `root` with forward slashes (both local or both gs://)."""
    root = str(root).rstrip("/")
    return str(uri)[len(root) + 1 :] if str(uri).startswith(root + "/") else str(uri)


def upload_tree(local: str | Path, uri: str, last: tuple[str, ...] = ()) -> int:
    """Copy a local folder to a local path or gs:// prefix; the names in `last` go last.

    A reader that waits for the last file (e.g. stats.json) sees a complete folder.
    """
    local = Path(local)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() in last)
    for path in files:
        copy_file(path, f"{uri.rstrip('/')}/{path.relative_to(local).as_posix()}")
    return len(files)


def download_tree(uri: str, local: str | Path) -> Path:
    """Copy every object under a gs:// prefix into a local folder (kept structure)."""
    local = Path(local)
    prefix = uri.rstrip("/")
    count = 0
    for remote in list_files(prefix):
        target = local / relative(remote, prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(remote))
        count += 1
    if count == 0:
        raise UserError(f"nothing found under {uri}; pass the gs:// folder a stage wrote")
    return local


@contextlib.contextmanager
def local_folder(uri: str | Path, marker: str):
    """A local path for a stage input folder: itself, or a temporary copy of a gs:// one."""
    if not is_gcs(str(uri)):
        yield Path(uri)
        return
    if not exists(f"{str(uri).rstrip('/')}/{marker}"):
        raise UserError(f"{uri} has no {marker}; is it a complete output of a visionpipe stage?")
    with tempfile.TemporaryDirectory(prefix="visionpipe-") as tmp:
        yield download_tree(str(uri), tmp)


@contextlib.contextmanager
def output_folder(uri: str | Path, last: tuple[str, ...] = ("config.json",)):
    """A local path to write a stage's output to; for gs:// it is uploaded when complete."""
    if not is_gcs(str(uri)):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="visionpipe-") as tmp:
        staged = Path(tmp) / "out"
        yield staged
        upload_tree(staged, str(uri), last)
