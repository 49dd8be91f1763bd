"""A KServe InferenceService beside every published version, and the model layout its
serving runtime reads.

KServe copies `storageUri` to /mnt/models in the predictor pod and starts the runtime
there, so the URI must name a folder in the runtime's own layout:

  triton      <version>/serving/triton/<name>/config.pbtxt, labels.txt, 1/model.onnx
              (a Triton model repository; `kserve-tritonserver`, open inference protocol v2:
              POST /v2/models/<name>/infer)
  tensorflow  <version>/serving/tensorflow/1/saved_model.pb, variables/...
              (a TF Serving base path; `kserve-tensorflow-serving`, protocol v1:
              POST /v1/models/<name>:predict, signature `serving_default`)
  openvino    <version>/serving/openvino/1/model.xml, model.bin
              (an OpenVINO Model Server repository; `kserve-ovms`, model format
              `openvino_ir`, open inference protocol v2: POST /v2/models/<name>/infer)

An OpenVINO IR is served at the inference precision it was verified at (rt_info
model_info/inference_precision, f32 as export writes it): the service passes OVMS
`--plugin_config {"INFERENCE_PRECISION_HINT": "f32"}` (OVMS's documented model option,
appended to the kserve-ovms runtime's own args by KServe), since OpenVINO computes float
layers in bf16 by default on CPUs with AVX512_BF16 or AMX.

The InferenceService is named after the model (not the version), so applying a newer
version's file rolls the same service forward. Before it is published it is validated
against the InferenceService CRD's own OpenAPI schema (serving.kserve.io/v1beta1,
schemas/inferenceservice-v1beta1.json.gz, from KServe's config/crd/full), with unknown
fields refused, as `kubectl apply --validate=strict` would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from components.infra import schemas

SCHEMA = Path(__file__).parent / "schemas" / "inferenceservice-v1beta1.json.gz"
API_VERSION = "serving.kserve.io/v1beta1"
MANIFEST_FILE = "inferenceservice.yaml"


@dataclass(frozen=True)
class Runtime:
    model_format: str
    runtime: str
    protocol: str
    folder: str


RUNTIME = {
    "triton": Runtime("onnx", "kserve-tritonserver", "v2", "serving/triton"),
    "tensorflow": Runtime("tensorflow", "kserve-tensorflow-serving", "v1", "serving/tensorflow"),
    # OpenVINO Model Server: a model repository of numbered versions, each model.xml + .bin
    "openvino": Runtime("openvino_ir", "kserve-ovms", "v2", "serving/openvino"),
}


def service_name(model_name: str) -> str:
    """An RFC 1035 label from the model name (what Knative and KServe accept): lower case,
    letters, digits and '-', starting with a letter, at most 45 characters (KServe adds
    `-predictor` and a revision suffix within the 63 a DNS label allows)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    name = name if name[:1].isalpha() else f"m-{name}"
    return name[:45].rstrip("-")


def _dims(shape: list) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def triton_config(name: str, signature: dict[str, list], max_batch_size: int) -> str:
    """config.pbtxt for the ONNX model: dynamic batching, the class names on the output
    (Triton's classification extension reads labels.txt)."""
    types = {"image": "TYPE_FP32", "metadata": "TYPE_FP32"}
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
    ]
    for input_name, shape in signature["inputs"]:
        dims = ", ".join(str(d) for d in _dims(shape)[1:])
        lines += [
            "input {",
            f'  name: "{input_name}"',
            f"  data_type: {types.get(input_name, 'TYPE_FP32')}",
            f"  dims: [ {dims} ]",
            "}",
        ]
    for output_name, shape in signature["outputs"]:
        dims = ", ".join(str(d) for d in _dims(shape)[1:])
        lines += [
            "output {",
            f'  name: "{output_name}"',
            "  data_type: TYPE_FP32",
            f"  dims: [ {dims} ]",
            '  label_filename: "labels.txt"',
            "}",
        ]
    lines += ["dynamic_batching { }", ""]
    return "\n".join(lines)


def layout(
    runtime: str, export_dir: Path, name: str, onnx_file: str, scratch: Path, max_batch: int
) -> list[tuple[Path, str]]:
    """(local file, path inside the version) of the runtime's model folder."""
    from components.vision.packed import onnx_signature

    folder = RUNTIME[runtime].folder
    if runtime == "triton":
        model = export_dir / onnx_file
        if not model.is_file():
            raise FileNotFoundError(f"{onnx_file} is not in the export folder {export_dir}")
        config = scratch / "config.pbtxt"
        config.write_text(triton_config(name, onnx_signature(model), max_batch))
        return [
            (config, f"{folder}/{name}/config.pbtxt"),
            (export_dir / "labels.txt", f"{folder}/{name}/labels.txt"),
            (model, f"{folder}/{name}/1/model.onnx"),
        ]
    if runtime == "openvino":
        model = export_dir / onnx_file  # model.xml or model_int8.xml
        if not model.is_file():
            raise FileNotFoundError(f"{onnx_file} is not in the export folder {export_dir}")
        return [
            (model, f"{folder}/1/model.xml"),
            (model.with_suffix(".bin"), f"{folder}/1/model.bin"),
            (export_dir / "labels.txt", f"{folder}/labels.txt"),
        ]
    saved_model = export_dir / "saved_model"
    if not (saved_model / "saved_model.pb").is_file():
        raise FileNotFoundError(f"no saved_model/ in the export folder {export_dir}")
    return [
        (path, f"{folder}/1/{path.relative_to(saved_model).as_posix()}")
        for path in sorted(saved_model.rglob("*"))
        if path.is_file()
    ]


VERIFIED_PRECISION = "f32"  # what export verifies every IR at (export/convert.py)


def openvino_precision(model_xml: Path | None) -> str:
    """The inference precision an IR says it was verified at (rt_info
    model_info/inference_precision), read from the XML without OpenVINO; f32 for an IR
    that does not say (export verifies every IR at f32)."""
    import xml.etree.ElementTree as ElementTree

    if model_xml is None or not Path(model_xml).is_file():
        return VERIFIED_PRECISION
    found = ElementTree.parse(model_xml).getroot().find("rt_info/model_info/inference_precision")
    return found.get("value", VERIFIED_PRECISION) if found is not None else VERIFIED_PRECISION


def runtime_args(runtime: str, model_file: Path | None = None) -> list[str]:
    """Arguments KServe appends to the runtime container's own: OVMS's plugin config with
    the IR's verified inference precision; none for the other runtimes."""
    if runtime != "openvino":
        return []
    plugin = {"INFERENCE_PRECISION_HINT": openvino_precision(model_file)}
    return [f"--plugin_config={json.dumps(plugin, separators=(',', ':'))}"]


def inference_service(
    *,
    name: str,
    runtime: str,
    storage_uri: str,
    model_name: str,
    version: str,
    cpu: str,
    memory: str,
    gpus: int = 0,
    runtime_version: str = "",
    min_replicas: int = 1,
    max_replicas: int = 1,
    service_account: str = "",
    args: list[str] | None = None,
) -> dict[str, Any]:
    """The InferenceService object for one published version. `service_account`: the
    predictor's, whose Secret holds the bucket's credentials (KServe's s3:// convention);
    `args`: appended to the serving runtime's container arguments (runtime_args)."""
    spec = RUNTIME[runtime]
    resources: dict[str, dict[str, Any]] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu, "memory": memory},
    }
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
    model: dict[str, Any] = {
        "modelFormat": {"name": spec.model_format},
        "runtime": spec.runtime,
        "protocolVersion": spec.protocol,
        "storageUri": storage_uri,
        "resources": resources,
    }
    if runtime_version:
        model["runtimeVersion"] = runtime_version
    if args:
        model["args"] = list(args)
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "model": model,
    }
    if service_account:
        predictor["serviceAccountName"] = service_account
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/name": name,
                "app.kubernetes.io/part-of": "visionpipe",
                "app.kubernetes.io/version": _label_value(version),
            },
            "annotations": {
                "visionpipe/model-name": model_name,
                "visionpipe/version": version,
            },
        },
        "spec": {"predictor": predictor},
    }


def kserve_uri(uri: str) -> str:
    """`uri` as KServe's storage initializer reads it: a `minio://` bucket is an S3 bucket
    (KServe has no minio scheme; its endpoint and keys come from the predictor's service
    account, docs/cluster.md 'Object stores')."""
    return "s3://" + uri[len("minio://") :] if uri.startswith("minio://") else uri


def service_for(
    config, target: str, version: str, model_file: Path | None = None
) -> dict[str, Any]:
    """The InferenceService a push with `config` (a PushConfig) writes for `target`;
    `model_file`: the exported file it serves (an IR's rt_info names its precision)."""
    return inference_service(
        name=service_name(config.model_name),
        runtime=config.serving,
        storage_uri=kserve_uri(f"{target}/{RUNTIME[config.serving].folder}"),
        service_account=config.serving_service_account,
        model_name=config.model_name,
        version=version,
        cpu=config.serving_cpu,
        memory=config.serving_memory,
        gpus=config.serving_gpus,
        runtime_version=config.serving_runtime_version,
        min_replicas=config.serving_min_replicas,
        max_replicas=config.serving_max_replicas,
        args=runtime_args(config.serving, model_file),
    )


def _label_value(value: str) -> str:
    """A Kubernetes label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63]
    return cleaned.strip("._-") or "unversioned"


def to_yaml(service: dict[str, Any], version_uri: str) -> str:
    head = (
        f"# KServe InferenceService for {version_uri}\n"
        "# kubectl apply -n <namespace> -f inferenceservice.yaml (written by visionpipe push)\n"
    )
    return head + yaml.safe_dump(service, sort_keys=False)


@cache
def _schema() -> dict[str, Any]:
    return schemas.closed(schemas.load(SCHEMA))


DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def validate(service: Any, where: str = "InferenceService", remote: bool = True) -> list[str]:
    """Problems of `service` against the v1beta1 InferenceService schema (one line each).
    remote: also refuse a storageUri that a cluster cannot read (a local path)."""
    if not isinstance(service, dict):
        return [f"{where}: expected a mapping, got {type(service).__name__}"]
    problems = []
    if service.get("apiVersion") != API_VERSION or service.get("kind") != "InferenceService":
        problems.append(f"{where}: expected apiVersion {API_VERSION}, kind InferenceService")
    name = (service.get("metadata") or {}).get("name", "")
    if not isinstance(name, str) or not DNS_1035.fullmatch(name) or len(name) > 63:
        problems.append(f"{where}: metadata.name {name!r} is not an RFC 1035 label")
    problems += schemas.problems(_schema(), service, where)
    predictor = (service.get("spec") or {}).get("predictor") or {}
    uri = (predictor.get("model") or {}).get("storageUri", "")
    if remote and uri and not re.match(r"(gs|s3|pvc|https?|hdfs|webhdfs|oci|hf)://", uri):
        problems.append(
            f"{where}: storageUri {uri!r} is not a location KServe can read (gs://, s3://, "
            "pvc://, https://...); publish to a bucket, or copy the version there"
        )
    return problems
