"""Publishing a blessed, verified export to a registry folder or bucket.

  <registry>/<model_name>/<version>/...          every file of the export folder
  <registry>/<model_name>/<version>/manifest.json  files with SHA-256 and size, metrics
  <registry>/<model_name>/latest.json            pointer, written only after all of the above

A version is never overwritten, and `latest.json` moves only when the new
version is complete, so a reader following it never sees half a model.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from components.common import progress, storage
from components.common.artifacts import read_json
from components.common.errors import UserError
from components.push.config import PushConfig

STAGE = "push"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_unless_verified(export_dir: Path, evaluation_dir: Path) -> dict[str, Any]:
    blessing_path = evaluation_dir / "blessing.json"
    if not blessing_path.exists():
        raise UserError(f"no blessing.json in {evaluation_dir}; pass the evaluate stage's folder")
    blessing = read_json(blessing_path)
    if not blessing.get("blessed"):
        raise UserError(
            "refusing to push a model that is not blessed: "
            + "; ".join(blessing.get("reasons", []))
        )
    parity_path = export_dir / "parity.json"
    if not parity_path.exists():
        raise UserError(f"no parity.json in {export_dir}; pass the export stage's folder")
    failed = [name for name, r in read_json(parity_path).items() if r.get("passed") is False]
    if failed:
        raise UserError(f"refusing to push: formats failed verification: {', '.join(failed)}")
    return blessing


def run(config: PushConfig, export_dir: str | Path, evaluation_dir: str | Path) -> dict[str, Any]:
    """Copy the export to `<registry>/<name>/<version>/`, then move `latest.json` to it."""
    started = time.time()
    export_dir, evaluation_dir = Path(export_dir), Path(evaluation_dir)
    if not config.registry:
        progress.log(STAGE, "no push.registry configured: nothing published")
        return {"pushed": False, "elapsed_s": 0.0}
    blessing = refuse_unless_verified(export_dir, evaluation_dir)
    files = sorted(p for p in export_dir.rglob("*") if p.is_file())
    entries = [
        {
            "path": p.relative_to(export_dir).as_posix(),
            "sha256": sha256_file(p),
            "bytes": p.stat().st_size,
        }
        for p in files
    ]
    version = config.version or time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + next(
        (e["sha256"][:8] for e in entries if e["path"] == "model.onnx"), entries[0]["sha256"][:8]
    )
    base = config.registry.rstrip("/") + "/" + config.model_name
    target = f"{base}/{version}"
    if storage.exists(f"{target}/manifest.json"):
        raise UserError(
            f"version {version!r} already exists at {target}; versions are never "
            "overwritten, set push.version to a new one or leave it empty"
        )
    metrics_path = evaluation_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    with progress.step(STAGE, f"copying {len(files)} files to {target}"):
        for path, entry in zip(files, entries, strict=True):
            storage.copy_file(path, f"{target}/{entry['path']}")
    manifest = {
        "model_name": config.model_name,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "uri": target,
        "files": entries,
        "blessing": blessing,
        "test_accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    storage.write_bytes(f"{target}/manifest.json", manifest_bytes)
    # the pointer moves last: readers of latest.json only ever see complete versions
    latest = {
        "version": version,
        "uri": target,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
    }
    storage.write_bytes(f"{base}/latest.json", json.dumps(latest, indent=2).encode())
    progress.log(STAGE, f"published {config.model_name} {version} -> {target}")
    elapsed = round(time.time() - started, 2)
    return {"pushed": True, **latest, "files": len(entries), "elapsed_s": elapsed}
