"""Reading, writing and listing files on a local disk or in an object store.

Everything that takes a data or model location goes through these functions,
so a stage runs unchanged on a laptop, against Cloud Storage (`gs://`), and
against S3 or any S3-compatible store (`s3://`, and `minio://`, the pipeline
root of a stock Kubeflow). The stores themselves are in
`components/infra/objectstores.py`: the vendors' client libraries with their
own retry policies. A location with any other scheme (`azure://`, `hdfs://`,
`s3:/one-slash`) is refused with one line by `check_location`, never written
to a local folder of that name.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from components.infra.errors import UserError
from components.infra.objectstores import GcsStore, NotFound, S3Store, gcs_client  # noqa: F401

GCS_PREFIX = "gs://"
STORES = {"gs": GcsStore(), "s3": S3Store("s3"), "minio": S3Store("minio")}
SCHEMES = tuple(f"{name}://" for name in STORES)
# a URI scheme: two or more characters (C:/ is a drive), then ":/"
URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")


def is_gcs(uri: str) -> bool:
    return str(uri).startswith(GCS_PREFIX)


def is_remote(uri: str | Path) -> bool:
    """An object-store URI (gs://, s3://, minio://), as opposed to a local path."""
    return str(uri).startswith(SCHEMES)


def check_location(uri: str | Path, what: str) -> str:
    """`uri` itself, or one line naming `what` when the storage layer cannot serve it."""
    text = str(uri)
    match = URI_SCHEME.match(text)
    if match and not is_remote(text):
        scheme = match.group(1).lower()
        hint = (
            f"; did you mean {scheme}://{text[len(scheme) + 2 :].lstrip('/')}?"
            if f"{scheme}://" in SCHEMES
            else "; copy the files to one of those first"
        )
        raise UserError(
            f"{what} {text!r}: visionpipe stores to local paths, gs://, s3:// and minio:// "
            f"only{hint}"
        )
    if is_remote(text):
        split(text)  # a bucket is named
    return text


def split(uri: str) -> tuple[object, str, str]:
    """`s3://bucket/a/b` -> (the store, `bucket`, `a/b`)."""
    scheme, _, rest = str(uri).partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"{uri!r} names no bucket; expected {scheme}://BUCKET/PATH")
    return STORES[scheme], bucket, key


def split_gcs(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> (`bucket`, `a/b`)."""
    _, bucket, key = split(uri)
    return bucket, key


def retry_policy():
    return GcsStore.retry()


def read_bytes(uri: str) -> bytes:
    if is_remote(uri):
        store, bucket, key = split(uri)
        return store.read(bucket, key, str(uri))
    return Path(uri).read_bytes()


def write_bytes(uri: str, data: bytes) -> None:
    if is_remote(uri):
        store, bucket, key = split(uri)
        store.write(bucket, key, data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def copy_file(local: str | Path, uri: str) -> None:
    """Copy a local file to a local path or object (streamed, not read into memory)."""
    if is_remote(uri):
        store, bucket, key = split(uri)
        store.upload(bucket, key, str(local))
        return
    import shutil

    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(uri).with_name(Path(uri).name + ".partial")
    shutil.copyfile(local, tmp)
    os.replace(tmp, uri)


def download_file(uri: str, local: str | Path) -> None:
    """Copy a local path or object to a local file (streamed, not read into memory)."""
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    if is_remote(uri):
        store, bucket, key = split(uri)
        store.download(bucket, key, str(local), str(uri))
        return
    import shutil

    shutil.copyfile(uri, local)


def delete(uri: str) -> None:
    """Remove a file or object; one that is already gone is not an error."""
    if is_remote(uri):
        store, bucket, key = split(uri)
        store.delete(bucket, key)
        return
    Path(uri).unlink(missing_ok=True)


def delete_tree(uri: str) -> int:
    """Remove every file under a folder or prefix; the number removed."""
    files = list(list_files(uri)) if is_remote(uri) or Path(uri).is_dir() else []
    for name in files:
        delete(name)
    if not is_remote(uri) and Path(uri).is_dir():
        import shutil

        shutil.rmtree(uri, ignore_errors=True)
    return len(files)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write `uri` only if nothing is there yet; False when it already exists.

    Cloud Storage: a generation precondition of 0. S3: `If-None-Match: *`. A local
    file: hard-linking a complete temporary file to the name, which fails if it exists.
    """
    if is_remote(uri):
        store, bucket, key = split(uri)
        return store.create_exclusive(bucket, key, data)
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
    if is_remote(uri):
        store, bucket, key = split(uri)
        return store.read_versioned(bucket, key)
    path = Path(uri)
    if not path.exists():
        return None, None
    data = path.read_bytes()
    return data, data


def write_if_unchanged(uri: str, data: bytes, token: object) -> bool:
    """Replace `uri` only if it is still what `read_versioned` saw; False when another
    writer changed it in between (read again and decide again).

    Cloud Storage: `if_generation_match` on the generation read. S3: `If-Match` on the
    ETag read (`If-None-Match: *` where there was none). A local file: under an
    exclusive lock on `.<name>.lock` beside it, compare, then replace atomically.
    """
    if is_remote(uri):
        store, bucket, key = split(uri)
        return store.write_if_unchanged(bucket, key, data, token)
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


def check_preconditions(uri: str) -> None:
    """Refuse, with one line, a store that would ignore `create_exclusive` and
    `write_if_unchanged` (an S3-compatible endpoint without conditional writes)."""
    if is_remote(uri):
        store, bucket, key = split(uri)
        store.check_preconditions(bucket, key)


def exists(uri: str) -> bool:
    if is_remote(uri):
        store, bucket, key = split(uri)
        return store.exists(bucket, key)
    return Path(uri).exists()


def listing(prefix: str) -> dict[str, str]:
    """URI -> "size version" for every object whose name starts with `prefix`, from one
    listing (the version is a Cloud Storage generation or an S3 ETag)."""
    store, bucket, key = split(prefix)
    scheme = str(prefix).partition("://")[0]
    return {
        f"{scheme}://{bucket}/{name}": f"{size} {version}"
        for name, size, version in store.listing(bucket, key)
    }


def list_files(uri: str) -> Iterator[str]:
    """Every file under a folder or prefix, recursively, in sorted order."""
    if is_remote(uri):
        _, bucket, key = split(uri)
        scheme = str(uri).partition("://")[0]
        prefix = key.rstrip("/") + "/" if key else ""
        yield from sorted(listing(f"{scheme}://{bucket}/{prefix}"))
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
    if not is_remote(uri) and not Path(uri).is_dir():
        return not Path(uri).exists()
    return next(iter(list_files(uri)), None) is None


def relative(uri: str, root: str) -> str:
    """`uri` relative to `root` with forward slashes (both local or both in one store)."""
    root = str(root).rstrip("/")
    return str(uri)[len(root) + 1 :] if str(uri).startswith(root + "/") else str(uri)


def upload_tree(local: str | Path, uri: str, last: tuple[str, ...] = ()) -> int:
    """Copy a local folder to a local path or object prefix; the names in `last` go last.

    A reader that waits for the last file (e.g. stats.json) sees a complete folder.
    """
    local = Path(local)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() in last)
    for path in files:
        copy_file(path, f"{uri.rstrip('/')}/{path.relative_to(local).as_posix()}")
    return len(files)


def download_tree(uri: str, local: str | Path) -> Path:
    """Copy every object under a prefix into a local folder (kept structure)."""
    local = Path(local)
    prefix = uri.rstrip("/")
    count = 0
    for remote in list_files(prefix):
        target = local / relative(remote, prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(remote))
        count += 1
    if count == 0:
        raise UserError(f"nothing found under {uri}; pass the folder a stage wrote")
    return local


@contextlib.contextmanager
def local_folder(uri: str | Path, marker: str):
    """A local path for a stage input folder: itself, or a temporary copy of a remote one."""
    if not is_remote(check_location(uri, "stage input")):
        yield Path(uri)
        return
    if not exists(f"{str(uri).rstrip('/')}/{marker}"):
        raise UserError(f"{uri} has no {marker}; is it a complete output of a visionpipe stage?")
    with tempfile.TemporaryDirectory(prefix="visionpipe-") as tmp:
        yield download_tree(str(uri), tmp)


@contextlib.contextmanager
def output_folder(uri: str | Path, last: tuple[str, ...] = ("config.json",)):
    """A local path to write a stage's output to; a remote one is uploaded when complete."""
    if not is_remote(check_location(uri, "stage output")):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="visionpipe-") as tmp:
        staged = Path(tmp) / "out"
        yield staged
        upload_tree(staged, str(uri), last)
