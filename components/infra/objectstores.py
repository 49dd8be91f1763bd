"""The object stores behind `components.infra.storage`: Cloud Storage and S3.

Each store speaks for one scheme and takes (bucket, key) pairs; `storage` turns
URIs into those and keeps local paths to itself. Both use the vendor's own
client library and its retry policy:

- `gs://`: google-cloud-storage. Application-default credentials, or the
  emulator named by `STORAGE_EMULATOR_HOST`. Preconditions: object generations.
- `s3://` and `minio://`: boto3, for AWS S3 and any S3-compatible endpoint
  (MinIO, SeaweedFS, Ceph). The endpoint is boto3's own setting
  (`AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, then `~/.aws/config`); a
  `minio://` URI, the default pipeline root of a stock Kubeflow, needs one of the
  two variables (the compiled pipeline sets them from the cluster file, as the
  KFP launcher reads its `kfp-launcher` ConfigMap). Credentials: the AWS
  credential chain. Preconditions: `If-None-Match: *` and `If-Match: <ETag>` on
  PutObject (AWS S3 since 2024, MinIO, SeaweedFS); `check_preconditions` probes an
  endpoint once and refuses one that ignores them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import uuid
from collections.abc import Iterator

from components.infra.errors import UserError


class NotFound(FileNotFoundError):
    """No object at a URI (every store raises this, and local reads FileNotFoundError)."""

    def __init__(self, uri: str):
        super().__init__(errno.ENOENT, "no such object", uri)


class GcsStore:
    scheme = "gs"

    @staticmethod
    def retry():
        """Retry 429, 5xx and connection errors with exponential backoff (0.5 s doubling,
        2 min). Writes too: every write here replaces a whole object with the same bytes,
        so repeating one is safe (the library retries uploads only when told)."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_delay(initial=0.5, maximum=16.0).with_timeout(120.0)

    @property
    def client(self):
        return gcs_client()

    def blob(self, bucket: str, key: str):
        return self.client.bucket(bucket).blob(key)

    @contextlib.contextmanager
    def missing_as(self, uri: str):
        from google.api_core.exceptions import NotFound as GoogleNotFound

        try:
            yield
        except GoogleNotFound:
            raise NotFound(uri) from None

    def read(self, bucket: str, key: str, uri: str) -> bytes:
        with self.missing_as(uri):
            return self.blob(bucket, key).download_as_bytes(retry=self.retry())

    def write(self, bucket: str, key: str, data: bytes) -> None:
        self.blob(bucket, key).upload_from_string(data, retry=self.retry())

    def upload(self, bucket: str, key: str, local: str) -> None:
        self.blob(bucket, key).upload_from_filename(local, retry=self.retry())

    def download(self, bucket: str, key: str, local: str, uri: str) -> None:
        with self.missing_as(uri):
            self.blob(bucket, key).download_to_filename(local, retry=self.retry())

    def delete(self, bucket: str, key: str) -> None:
        from google.api_core.exceptions import NotFound as GoogleNotFound

        with contextlib.suppress(GoogleNotFound):
            self.blob(bucket, key).delete(retry=self.retry())

    def exists(self, bucket: str, key: str) -> bool:
        return self.blob(bucket, key).exists(retry=self.retry())

    def listing(self, bucket: str, prefix: str) -> Iterator[tuple[str, int, str]]:
        """(key, size, generation) of every object under `prefix`, one listing."""
        for blob in self.client.list_blobs(bucket, prefix=prefix, retry=self.retry()):
            if not blob.name.endswith("/"):
                yield blob.name, int(blob.size or 0), str(blob.generation)

    def create_exclusive(self, bucket: str, key: str, data: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.blob(bucket, key).upload_from_string(
                data, if_generation_match=0, retry=self.retry()
            )
        except PreconditionFailed:
            # a retried request whose first attempt did land reads back our own bytes
            return self.read(bucket, key, f"gs://{bucket}/{key}") == data
        return True

    def read_versioned(self, bucket: str, key: str) -> tuple[bytes | None, object]:
        blob = self.client.bucket(bucket).get_blob(key, retry=self.retry())
        if blob is None:
            return None, 0
        generation = int(blob.generation)  # before the download, which may reset it
        return blob.download_as_bytes(retry=self.retry()), generation

    def write_if_unchanged(self, bucket: str, key: str, data: bytes, token: object) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.blob(bucket, key).upload_from_string(
                data, if_generation_match=token, retry=self.retry()
            )
        except PreconditionFailed:
            return False
        return True

    def check_preconditions(self, bucket: str, prefix: str = "") -> None:
        """Cloud Storage always honours generation preconditions."""


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


ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def s3_endpoint(scheme: str) -> str | None:
    """The endpoint a client for `scheme` talks to: None is boto3's own choice (AWS, or
    `~/.aws/config`). `minio://` has no public default, so it must be named."""
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value if "://" in value else f"http://{value}"
    if scheme == "minio":
        raise UserError(
            "a minio:// location needs the object store's endpoint: set AWS_ENDPOINT_URL_S3 "
            "(a stock Kubeflow: http://seaweedfs.kubeflow:9000 from KFP 2.16, "
            "http://minio-service.kubeflow:9000 before) and the access key in "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (docs/cluster.md, 'Object stores')"
        )
    return None


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, region: str | None):
    import boto3
    from botocore.config import Config

    config = Config(
        # standard mode: 429/503 throttling, 5xx and connection errors, exponential
        # backoff with jitter; 10 attempts ride out a minute or so of a busy endpoint
        retries={"mode": "standard", "max_attempts": 10},
        connect_timeout=10,
        read_timeout=120,
        # path-style (endpoint/bucket/key) is what MinIO, SeaweedFS and Ceph serve without
        # wildcard DNS; AWS itself keeps its virtual-hosted default
        s3={"addressing_style": "path"} if endpoint else None,
        # checksums only where the operation needs one: MinIO and SeaweedFS releases before
        # 2025 reject the CRC32 trailers boto3 adds to every upload by default
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, config=config
    )


def s3_client(scheme: str = "s3"):
    endpoint = s3_endpoint(scheme)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint and not region:
        region = "us-east-1"  # S3-compatible servers take any region; boto3 wants one
    return _s3_client(endpoint, region)


class S3Store:
    def __init__(self, scheme: str):
        self.scheme = scheme

    @property
    def client(self):
        return s3_client(self.scheme)

    @staticmethod
    def code(error) -> str:
        return str(error.response.get("Error", {}).get("Code", ""))

    @staticmethod
    def status(error) -> int:
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))

    def is_missing(self, error) -> bool:
        return self.code(error) in ("NoSuchKey", "404", "NotFound") or self.status(error) == 404

    def is_precondition(self, error) -> bool:
        return self.code(error) == "PreconditionFailed" or self.status(error) == 412

    @contextlib.contextmanager
    def missing_as(self, uri: str):
        from botocore.exceptions import ClientError

        try:
            yield
        except ClientError as error:
            if self.is_missing(error):
                raise NotFound(uri) from None
            raise

    def read(self, bucket: str, key: str, uri: str) -> bytes:
        with self.missing_as(uri):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def write(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def upload(self, bucket: str, key: str, local: str) -> None:
        self.client.upload_file(local, bucket, key)  # multipart above 8 MiB, retried per part

    def download(self, bucket: str, key: str, local: str, uri: str) -> None:
        with self.missing_as(uri):
            self.client.download_file(bucket, key, local)

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)  # absent already: S3 answers 204

    def exists(self, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if self.is_missing(error):
                return False
            raise
        return True

    def listing(self, bucket: str, prefix: str) -> Iterator[tuple[str, int, str]]:
        """(key, size, ETag) of every object under `prefix`, one paginated listing."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    yield item["Key"], int(item["Size"]), str(item["ETag"]).strip('"')

    def create_exclusive(self, bucket: str, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as error:
            if not self.is_precondition(error) and self.code(error) != "ConditionalRequestConflict":
                raise
            # a retried request whose first attempt did land reads back our own bytes
            return self.read(bucket, key, f"{self.scheme}://{bucket}/{key}") == data
        return True

    def read_versioned(self, bucket: str, key: str) -> tuple[bytes | None, object]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if self.is_missing(error):
                return None, None
            raise
        return response["Body"].read(), response["ETag"]  # the ETag of the bytes read

    def write_if_unchanged(self, bucket: str, key: str, data: bytes, token: object) -> bool:
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": str(token)}
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except ClientError as error:
            # 409 ConditionalRequestConflict: another conditional write to the key in flight
            if self.is_precondition(error) or self.code(error) == "ConditionalRequestConflict":
                return False
            raise
        return True

    def check_preconditions(self, bucket: str, prefix: str = "") -> None:
        """Refuse an endpoint that ignores conditional writes, once per bucket and process:
        on it two pushes at once could claim the same version or lose `latest.json`. The
        probe object lives under `prefix` (where the caller may write) and is deleted."""
        _probe_s3_preconditions(self.scheme, s3_endpoint(self.scheme), bucket, prefix)


@functools.lru_cache(maxsize=32)
def _probe_s3_preconditions(scheme: str, endpoint: str | None, bucket: str, prefix: str) -> None:
    store = S3Store(scheme)
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    key = f"{base}.visionpipe-precondition-probe-{uuid.uuid4().hex}"
    where = f"{scheme}://{bucket} ({endpoint or 'AWS'})"
    try:
        if not store.create_exclusive(bucket, key, b"first"):
            raise UserError(f"{where}: cannot create a probe object; check the credentials")
        ignores = store.create_exclusive(bucket, key, b"second")
        stale = store.write_if_unchanged(bucket, key, b"third", '"0-not-the-etag"')
    finally:
        store.delete(bucket, key)
    if ignores or stale:
        header = "If-None-Match: *" if ignores else "If-Match"
        raise UserError(
            f"{where} ignores {header} on PutObject, so concurrent pushes could overwrite "
            "each other; use an endpoint with conditional writes (AWS S3, MinIO, SeaweedFS), "
            "or a local or gs:// registry"
        )
