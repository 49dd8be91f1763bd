"""Self-describing artifact folders: atomic writes and the `config.json` that made them."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import components

TRACKED_PACKAGES = (
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "numpy",
    "scikit-learn",
    "kfp",
    "tf2onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "ai-edge-litert",
    "pillow",
)


def versions() -> dict[str, str]:
    found = {"visionpipe": components.__version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def atomic_dir(final: str | Path, resume_key: str | None = None) -> Iterator[Path]:
    """Build an output folder beside `final` and move it into place only when complete.

    An interrupted stage leaves no half-written folder under the final name, so
    a later stage cannot mistake it for a finished artifact. With `resume_key`
    (a digest of everything that determines the output) the work folder has a
    fixed name and survives a crash or a kill: the same command run again gets
    it back to resume from, while a different config starts afresh.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if resume_key is None:
        work = final.with_name(f".{final.name}.partial-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
    else:
        work = final.with_name(f".{final.name}.partial")
        key_file = work / ".resume_key"
        if work.exists() and (not key_file.exists() or key_file.read_text() != resume_key):
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if resume_key is not None:
        (work / ".resume_key").write_text(resume_key)
    try:
        yield work
    except BaseException:
        if resume_key is None:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if resume_key is not None:
        (work / ".resume_key").unlink(missing_ok=True)
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(work, final)


class StageRecord:
    """Collects what `config.json` says about a stage run: config, inputs, versions, time."""

    def __init__(self, stage: str, config: Any, inputs: dict[str, str]):
        self.stage = stage
        self.config = config
        self.inputs = inputs
        self.started = time.time()

    def write(self, folder: str | Path, **extra: Any) -> dict[str, Any]:
        record = {
            "stage": self.stage,
            "config": self.config.to_dict(),
            "inputs": self.inputs,
            "versions": versions(),
            "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "elapsed_s": round(time.time() - self.started, 2),
            **extra,
        }
        write_json(Path(folder) / "config.json", record)
        return record
