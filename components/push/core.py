"""Publishing a blessed, verified export to a registry folder or bucket.

The layout is `components/infra/registry.py`'s. A push:

1. claims the version name by creating `<version>/.claimed` exclusively
   (`if_generation_match=0` on Cloud Storage, an atomic hard link on a disk):
   of two pushes racing for one name, exactly one wins. An automatic name that
   is taken gets a `-2`, `-3`, ... suffix; an explicit one is refused;
2. copies the export, and what re-evaluation needs (model/, dataset/ with the
   split manifests, evaluation/), then writes `manifest.json` (every file's
   sha256 and size);
3. moves `latest.json` by compare-and-swap (a generation precondition on Cloud
   Storage, a lock on a disk), and only forward: a push that finishes late
   does not replace a newer version.

A version is never overwritten, and `latest.json` only ever names a complete one.
With `push.serving` (triton by default) the version also holds the serving runtime's
model folder and `inferenceservice.yaml`, a KServe InferenceService pointing at it
(components/push/serving.py), validated against KServe's schema before publishing.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.infra import progress, registry, storage
from components.infra.artifacts import read_json
from components.infra.errors import PushRefused, UserError
from components.push import serving
from components.push.config import PushConfig

STAGE = "push"
# what of each upstream folder a later run needs to re-measure this version
REFERENCE_FILES = {
    registry.MODEL: ("model.keras", "metadata.json", "classes.json", "config.json"),
    registry.DATASET: (
        "classes.json",
        "stats.json",
        "splits/train.csv",
        "splits/val.csv",
        "splits/test.csv",
    ),
    registry.EVALUATION: ("metrics.json", "blessing.json", "calibration.json"),
}
MAX_SUFFIX = 100
# images per split in dataset/reference/, the sample of the version's own images the next
# night's validate compares new images with (components/vision/records.py: write_sample):
# enough for a 0.99 quantile and 5 nearest neighbours, small beside the model files
REFERENCE_IMAGES = 1000


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
        raise PushRefused(
            "refusing to push a model that is not blessed: "
            + "; ".join(blessing.get("reasons", []))
        )
    parity_path = export_dir / "parity.json"
    if not parity_path.exists():
        raise UserError(f"no parity.json in {export_dir}; pass the export stage's folder")
    failed = [  # a format the export dropped (on_variant_failure: drop) is not in it
        n
        for n, r in read_json(parity_path).items()
        if r.get("passed") is False and not r.get("dropped")
    ]
    if failed:
        raise PushRefused(f"refusing to push: formats failed verification: {', '.join(failed)}")
    return blessing


def files_to_publish(
    export_dir: Path, evaluation_dir: Path, model: Path | None, dataset: Path | None
) -> list[tuple[Path, str]]:
    """(local file, path inside the version) for the export and the reference parts."""
    files = [
        (p, p.relative_to(export_dir).as_posix()) for p in export_dir.rglob("*") if p.is_file()
    ]
    for part, folder in (
        (registry.MODEL, model),
        (registry.DATASET, dataset),
        (registry.EVALUATION, evaluation_dir),
    ):
        if folder is None:
            continue
        for name in REFERENCE_FILES[part]:
            if (Path(folder) / name).is_file():
                files.append((Path(folder) / name, f"{part}/{name}"))
    return sorted(files, key=lambda item: item[1])


def resolve_auto(config: PushConfig, export_dir: Path) -> PushConfig:
    """push.serving: auto as the runtime of the fastest verified server file, from the
    export's own benchmark.json and parity.json (components/vision/targets.py)."""
    from components.vision.targets import auto_serving

    paths = [export_dir / "benchmark.json", export_dir / "parity.json"]
    if not all(p.is_file() for p in paths):
        raise UserError(
            f"push.serving=auto reads benchmark.json and parity.json in {export_dir}; pass the "
            "folder visionpipe export wrote, or name the runtime (triton, tensorflow, openvino)"
        )
    runtime, int8, why = auto_serving(read_json(paths[0]), read_json(paths[1]))
    progress.log(STAGE, f"push.serving auto: {runtime}{' (int8)' if int8 else ''}: {why}")
    return config.replace(serving=runtime, serving_int8=int8)


def serving_source(config: PushConfig, export_dir: Path) -> str:
    """The export file the serving runtime gets; refused before anything is claimed."""
    if config.serving == "visionpipe":
        return visionpipe_source(export_dir)
    if config.serving == "tensorflow":
        if not (export_dir / "saved_model" / "saved_model.pb").is_file():
            raise UserError(
                f"push.serving=tensorflow needs saved_model/ in {export_dir}; add saved_model "
                "to export.formats, or set push.serving to triton or none"
            )
        return "saved_model"
    if config.serving == "openvino":
        name = "model_int8.xml" if config.serving_int8 else "model.xml"
        if not (export_dir / name).is_file():
            fmt = "openvino_int8" if config.serving_int8 else "openvino"
            raise UserError(
                f"push.serving=openvino needs {name} in {export_dir}; add {fmt} to "
                "export.formats, or set push.serving to triton, tensorflow or none"
            )
        return name
    name = "model_int8.onnx" if config.serving_int8 else "model.onnx"
    if config.serving == "triton" and not (export_dir / name).is_file():
        fmt = "onnx_int8" if config.serving_int8 else "onnx"
        raise UserError(
            f"push.serving=triton needs {name} in {export_dir}; add {fmt} to export.formats, "
            "or set push.serving to tensorflow or none"
        )
    return name


def visionpipe_source(export_dir: Path) -> str:
    """The file `visionpipe serve` runs: the fastest verified ONNX/OpenVINO file
    (monitoring.served_format, serve's own choice)."""
    from components.vision import monitoring
    from components.vision.targets import FILES

    benchmark, parity = (
        read_json(export_dir / n) if (export_dir / n).is_file() else {}
        for n in ("benchmark.json", "parity.json")
    )
    chosen = monitoring.served_format(benchmark, parity) if benchmark else None
    if chosen is None:
        raise UserError(
            f"push.serving=visionpipe needs a verified ONNX or OpenVINO file measured in "
            f"{export_dir}/benchmark.json; add onnx or openvino to export.formats, or set "
            "push.serving to triton, tensorflow or none"
        )
    return FILES[chosen]


def serving_files(
    config: PushConfig, export_dir: Path, target: str, version: str, scratch: Path
) -> list[tuple[Path, str]]:
    """The runtime's model folder and inferenceservice.yaml for the version at `target`."""
    name = serving.service_name(config.model_name)
    files = serving.layout(
        config.serving,
        export_dir,
        name,
        serving_source(config, export_dir),
        scratch,
        config.serving_max_batch,
    )
    service = serving.service_for(
        config, target, version, export_dir / serving_source(config, export_dir)
    )
    problems = serving.validate(service, remote=False)
    if problems:  # the config was validated: this is a bug in the manifest writer
        raise ValueError("the InferenceService does not match KServe's schema: " + problems[0])
    if not storage.is_remote(target):
        progress.log(
            STAGE,
            f"{serving.MANIFEST_FILE} points at the folder {target}: KServe reads buckets "
            "(gs://, s3://, minio:// as s3://) or PVCs, so publish to one before applying it",
        )
    manifest = scratch / serving.MANIFEST_FILE
    manifest.write_text(serving.to_yaml(service, target))
    return [*files, (manifest, serving.MANIFEST_FILE)]


def claim(base: str, wanted: str, explicit: bool, token: bytes) -> str:
    """Take a version name under `base`; refuse a taken explicit one."""
    for n in range(1, MAX_SUFFIX + 1):
        version = wanted if n == 1 else f"{wanted}-{n}"
        if storage.create_exclusive(f"{base}/{version}/{registry.CLAIM}", token):
            return version
        if explicit:
            raise UserError(
                f"version {wanted!r} already exists at {base}/{wanted}; versions are never "
                "overwritten, set push.version to a new one or leave it empty"
            )
    raise UserError(f"{MAX_SUFFIX} versions named {wanted}[-N] exist under {base}; clean up")


def move_latest(base: str, latest: dict[str, Any], created: str) -> bool:
    """Point latest.json at this version unless a newer one is already there; True if moved."""
    uri = f"{base}/{registry.LATEST}"
    payload = json.dumps({**latest, "created": created}, indent=2).encode()
    while True:
        current, token = storage.read_versioned(uri)
        if current is not None and json.loads(current).get("created", "") > created:
            return False
        if storage.write_if_unchanged(uri, payload, token):
            return True


def verify(version_uri: str) -> list[str]:
    """Problems with a published version: files missing or not matching the manifest."""
    manifest = json.loads(storage.read_bytes(f"{version_uri}/{registry.MANIFEST}"))
    problems = []
    for entry in manifest["files"]:
        uri = f"{version_uri}/{entry['path']}"
        if not storage.exists(uri):
            problems.append(f"{entry['path']}: missing")
            continue
        data = storage.read_bytes(uri)
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']}: does not match its sha256")
    return problems


@dataclass
class Session:
    """One push: what is published, under which name, and where."""

    config: PushConfig
    export_dir: Path
    evaluation_dir: Path
    files: list[tuple[Path, str]] = field(default_factory=list)  # (local file, path inside)
    entries: list[dict[str, Any]] = field(default_factory=list)  # the manifest's files
    created: str = ""
    base: str = ""  # <registry>/<model_name>
    version: str = ""
    target: str = ""  # <base>/<version>
    dataset: Path | None = None  # the prepared dataset (its sample is published)

    def add(self, files: list[tuple[Path, str]]) -> None:
        self.files += files
        self.entries += [
            {"path": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
            for path, name in files
        ]


def run(
    config: PushConfig,
    export_dir: str | Path,
    evaluation_dir: str | Path,
    model: str | Path | None = None,
    dataset: str | Path | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish the export (and the model, split manifests and metrics beside it) as a new
    version under `<registry>/<model_name>/`, then move latest.json to it. `provenance`
    (the data fingerprint and config digest, pipelines/runkey.py) is published as
    provenance.json: the next night compares itself with it."""
    started = time.time()
    if not config.registry:
        progress.log(STAGE, "no push.registry configured: nothing published")
        return {"pushed": False, "elapsed_s": 0.0}
    if config.serving == "auto":
        config = resolve_auto(config, Path(export_dir))
    session = Session(config, Path(export_dir), Path(evaluation_dir))
    blessing = refuse_unless_verified(session.export_dir, session.evaluation_dir)
    if config.serving != "none":
        serving_source(config, session.export_dir)  # refused before anything is claimed
    gather(session, model, dataset)
    # an S3 endpoint that ignores If-None-Match / If-Match is refused before any claim
    storage.check_preconditions(config.registry)
    claim_version(session)
    with tempfile.TemporaryDirectory(prefix="push-") as scratch:
        add_generated(session, Path(scratch), provenance)
        with progress.step(STAGE, f"copying {len(session.files)} files to {session.target}"):
            for path, name in session.files:
                storage.copy_file(path, f"{session.target}/{name}")
    latest = write_manifest(session, blessing, provenance)
    moved = move_latest(session.base, latest, session.created)
    progress.log(
        STAGE,
        f"published {config.model_name} {session.version} -> {session.target}"
        + ("" if moved else " (latest.json already names a newer version; left as it is)"),
    )
    return {
        "pushed": True,
        **latest,
        "latest_moved": moved,
        "files": len(session.entries),
        "elapsed_s": round(time.time() - started, 2),
    }


def gather(session: Session, model, dataset) -> None:
    session.dataset = Path(dataset) if dataset else None
    session.add(
        files_to_publish(
            session.export_dir,
            session.evaluation_dir,
            Path(model) if model else None,
            Path(dataset) if dataset else None,
        )
    )


def claim_version(session: Session) -> None:
    """The version name (push.version, or the time and the ONNX file's hash), claimed."""
    config, entries = session.config, session.entries
    session.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    wanted = config.version or time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + next(
        (e["sha256"][:8] for e in entries if e["path"] == "model.onnx"), entries[0]["sha256"][:8]
    )
    session.base = config.registry.rstrip("/") + "/" + config.model_name
    token = json.dumps({"created": session.created, "nonce": time.time_ns()}).encode()
    session.version = claim(session.base, wanted, bool(config.version), token)
    session.target = f"{session.base}/{session.version}"


def add_generated(session: Session, scratch: Path, provenance: dict[str, Any] | None) -> None:
    """The serving runtime's folder and InferenceService, the sample of the dataset's
    images (dataset/reference/), and provenance.json."""
    if session.config.serving != "none":
        session.add(
            serving_files(
                session.config, session.export_dir, session.target, session.version, scratch
            )
        )
    if session.dataset is not None and (session.dataset / "tfrecords").is_dir():
        from components.vision.records import write_sample

        sample = write_sample(session.dataset, scratch / "sample", REFERENCE_IMAGES)
        prefix = f"{registry.DATASET}/{registry.REFERENCE_SAMPLE}"
        files = sorted(f for f in sample.rglob("*") if f.is_file())
        session.add([(f, f"{prefix}/{f.relative_to(sample).as_posix()}") for f in files])
        profile = monitor_reference(session.export_dir, sample, scratch)
        session.add(profile)
        if session.config.serving == "visionpipe":  # the OOD rule beside the served file
            folder = serving.RUNTIME["visionpipe"].folder
            session.add([(path, f"{folder}/{name}") for path, name in profile])
    if provenance:
        path = scratch / registry.PROVENANCE
        path.write_text(json.dumps(provenance, indent=2, sort_keys=True))
        session.add([(path, registry.PROVENANCE)])


def monitor_reference(export_dir: Path, sample: Path, scratch: Path) -> list[tuple[Path, str]]:
    """monitor_reference.json: the file `visionpipe serve` runs, profiled on the version's
    own sample (components/vision/monitoring.py): its OOD rule and what served traffic is
    compared with. None for a metadata model or an export without a servable file."""
    from components.vision import monitoring

    benchmark, parity = (
        read_json(export_dir / n) if (export_dir / n).exists() else {}
        for n in ("benchmark.json", "parity.json")
    )
    chosen = monitoring.served_format(benchmark, parity) if benchmark else None
    if chosen is None:
        return []
    from components.vision.targets import FILES

    try:
        profile = monitoring.dataset_profile(export_dir / FILES[chosen], sample)
    except ValueError as error:  # a graph whose classifier head is not a MatMul/Gemm
        progress.log(STAGE, f"no {monitoring.PROFILE_FILE} ({error}): serve gives no OOD score")
        return []
    if profile is None:
        progress.log(STAGE, f"no {monitoring.PROFILE_FILE}: a metadata model is not profiled")
        return []
    return [(monitoring.write_profile(profile, scratch), monitoring.PROFILE_FILE)]


def write_manifest(session: Session, blessing, provenance) -> dict[str, Any]:
    """manifest.json, written after every file; what latest.json will say."""
    config, target = session.config, session.target
    metrics_path = session.evaluation_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    manifest = {
        "model_name": config.model_name,
        "version": session.version,
        "created": session.created,
        "uri": target,
        "files": session.entries,
        "serving": (
            {
                "runtime": config.serving,
                "inference_service": f"{target}/{serving.MANIFEST_FILE}",
                "storage_uri": serving.kserve_uri(
                    f"{target}/{serving.RUNTIME[config.serving].folder}"
                ),
            }
            if config.serving != "none"
            else None
        ),
        "blessing": blessing,
        "test_accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "provenance": {k: (provenance or {}).get(k) for k in ("fingerprint", "key")},
        "reference": {
            part: any(e["path"].startswith(part + "/") for e in session.entries)
            for part in REFERENCE_FILES
        },
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    storage.write_bytes(f"{target}/{registry.MANIFEST}", manifest_bytes)
    # the pointer moves last: readers of latest.json only ever see complete versions
    return {
        "version": session.version,
        "uri": target,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
    }
