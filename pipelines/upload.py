"""Data a cluster can read: refuse a local path for a cluster run, or copy it to the bucket.

A pod has no access to the submitting machine's disk, so `submit` and
`schedule` accept only object-store sources (`gs://`, `s3://`, `minio://`) and `builtin:` ones (they ship inside
the image). `--upload` copies a local folder, or a manifest and the files its
rows name, to `<pipeline_root>/data/<fingerprint>/` and submits that prefix
instead; the same data is copied once (the fingerprint names the folder, and a
marker written last says the copy is complete).
"""

from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from components.infra import progress, storage
from components.infra.errors import UserError
from components.vision import digits
from components.vision.fingerprint import fingerprint
from components.vision.metadata import parse_rows
from components.vision.sources import is_manifest, list_source

UPLOAD_THREADS = 16


def cluster_data(data: str, upload: bool, pipeline_root: str) -> str:
    """`data` as the cluster's pods will read it; a local path is refused or uploaded."""
    if digits.is_builtin(data) or storage.is_remote(storage.check_location(data, "--data")):
        return data
    if not upload:
        raise UserError(
            f"--data {data!r} is a local path, which the cluster's pods cannot read; pass "
            "a gs://, s3:// or minio:// prefix, or add --upload to copy it under the pipeline root first"
        )
    if not storage.is_remote(pipeline_root):
        raise UserError(
            f"--upload copies {data!r} under the pipeline root, but the cluster settings name "
            "no object-store pipeline_root; set kubernetes.pipeline_root: gs://BUCKET/PREFIX (or "
            "s3://, minio://) in --cluster"
        )
    return upload_source(data, f"{pipeline_root.rstrip('/')}/data")


def upload_source(data: str, base: str) -> str:
    """Copy a local folder or manifest under `base`; return its URI there."""
    listing = list_source(data)  # refuses an empty or one-class source before any copy
    digest = fingerprint(data)
    target = f"{base}/{digest}"
    marker = f"{base}/{digest}.json"
    manifest = is_manifest(listing.root)
    name = Path(listing.root).name
    uri = f"{target}/{name}" if manifest else target
    if storage.exists(marker):
        progress.log("submit", f"{data} is already uploaded (fingerprint {digest}): {uri}")
        return uri
    if manifest:
        copies, text = manifest_copies(listing.root, target)
        storage.write_bytes(f"{target}/{name}", text.encode())
    else:
        copies = [
            (path, f"{target}/{storage.relative(path, listing.root)}")
            for path in storage.list_files(listing.root)
        ]
    with progress.step("submit", f"uploading {len(copies)} files of {data} to {target}"):
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(lambda pair: storage.copy_file(*pair), copies))
    storage.write_bytes(
        marker, json.dumps({"source": data, "fingerprint": digest, "files": len(copies)}).encode()
    )
    return uri


def manifest_copies(root: str, target: str) -> tuple[list[tuple[str, str]], str]:
    """(local file, destination) for each local row, and the manifest rewritten to name
    the copies relative to itself (object-store rows stay as they are)."""
    base = os.path.dirname(root)
    jsonl = root.lower().endswith(".jsonl")
    rows = parse_rows(Path(root).read_text(encoding="utf-8-sig"), jsonl, f"manifest {root!r}")
    copies: dict[str, str] = {}
    for row in rows:
        uri = (row.get("uri") or "").strip()
        if not uri or storage.is_remote(uri):
            continue
        path = os.path.normpath(uri if os.path.isabs(uri) else os.path.join(base, uri))
        inside = os.path.relpath(path, base)
        # files outside the manifest's folder keep their path below files/
        relative = inside if not inside.startswith("..") else "files" + path
        copies.setdefault(path, relative)
        row["uri"] = relative
    if jsonl:
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["uri", "label"])
        writer.writeheader()
        writer.writerows(rows)
        text = out.getvalue()
    return [(p, f"{target}/{rel}") for p, rel in copies.items() if os.path.exists(p)], text
