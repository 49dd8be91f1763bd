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
  visionpipe  <version>/serving/visionpipe/<the served file>, benchmark.json, ...
              (`visionpipe serve` from the serving image as a KServe custom predictor:
              container `kserve-container`, STORAGE_URI for the storage initializer, v1
              and v2 REST on 8080, raw image bytes, its own prediction log and OOD score)

With `push.serving_log` set, a Triton/TF Serving/OVMS service gets KServe's payload logger
(`spec.predictor.logger`, mode all) pointed at `visionpipe collect`
(`push.serving_log_url`); a visionpipe service logs itself (`--log`).

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
    # visionpipe serve as a custom predictor (a container, no ServingRuntime)
    "visionpipe": Runtime("", "", "v2", "serving/visionpipe"),
}
# what `visionpipe serve` reads beside the served file (components/serve/model.py: BESIDE
# and EXTRA; tests/test_serving.py checks the two lists agree): push copies those present
SERVE_BESIDE = (
    "benchmark.json",
    "parity.json",
    "config.json",
    "labels.txt",
    "classes.json",
    "metadata.json",
)
PORT = 8080  # KServe's custom predictor port
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
# the Service in front of `visionpipe collect` (docs/cluster.md), in the InferenceService's
# namespace, on collect's default port
COLLECT_URL = "http://visionpipe-collect:8081/"


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
    if runtime == "visionpipe":
        return visionpipe_layout(export_dir, onnx_file, folder)
    saved_model = export_dir / "saved_model"
    if not (saved_model / "saved_model.pb").is_file():
        raise FileNotFoundError(f"no saved_model/ in the export folder {export_dir}")
    return [
        (path, f"{folder}/1/{path.relative_to(saved_model).as_posix()}")
        for path in sorted(saved_model.rglob("*"))
        if path.is_file()
    ]


def visionpipe_layout(export_dir: Path, served: str, folder: str) -> list[tuple[Path, str]]:
    """The served file (an IR with its .bin) and what serve reads beside it; push adds
    monitor_reference.json, the OOD rule, once it has profiled the file."""
    model = export_dir / served
    if not model.is_file():
        raise FileNotFoundError(f"{served} is not in the export folder {export_dir}")
    files = [model] + ([model.with_suffix(".bin")] if served.endswith(".xml") else [])
    files += [export_dir / n for n in SERVE_BESIDE if (export_dir / n).is_file()]
    return [(path, f"{folder}/{path.name}") for path in files]


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


def resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, dict[str, Any]]:
    """Requests equal to limits (Guaranteed QoS), with nvidia.com/gpu when asked."""
    out: dict[str, dict[str, Any]] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu, "memory": memory},
    }
    if gpus:
        out["requests"]["nvidia.com/gpu"] = str(gpus)
        out["limits"]["nvidia.com/gpu"] = str(gpus)
    return out


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
    image: str = "",
    logger: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The InferenceService object for one published version. `service_account`: the
    predictor's, whose Secret holds the bucket's credentials (KServe's s3:// convention);
    `args`: appended to the serving runtime's container arguments (runtime_args), or for
    visionpipe the server's own (`image` runs it); `logger`: KServe's payload logger."""
    predictor: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    if runtime == "visionpipe":
        predictor["containers"] = [
            serve_container(image, storage_uri, list(args or []), resources(cpu, memory, gpus))
        ]
        predictor["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    else:
        spec = RUNTIME[runtime]
        model: dict[str, Any] = {
            "modelFormat": {"name": spec.model_format},
            "runtime": spec.runtime,
            "protocolVersion": spec.protocol,
            "storageUri": storage_uri,
            "resources": resources(cpu, memory, gpus),
        }
        if runtime_version:
            model["runtimeVersion"] = runtime_version
        if args:
            model["args"] = list(args)
        predictor["model"] = model
    if logger:
        predictor["logger"] = dict(logger)
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
                **(annotations or {}),
            },
        },
        "spec": {"predictor": predictor},
    }


# the stage images' hardening (k8s/base/cronjob.yaml), on the container: Knative takes
# these container fields without a feature flag; the image's user is 10001:10001
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def serve_container(image: str, storage_uri: str, args: list[str], limits) -> dict[str, Any]:
    """`visionpipe serve` as KServe's custom predictor container: KServe's storage
    initializer copies STORAGE_URI to /mnt/models before it starts (the container must be
    named kserve-container for that), the probes are the v2 health endpoints."""

    def probe(path: str, delay: int, period: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": PORT},
            "initialDelaySeconds": delay,
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        }

    return {
        "name": "kserve-container",
        "image": image,
        "command": ["visionpipe", "serve"],
        "args": [MODEL_DIR, "--host", "0.0.0.0", "--port", str(PORT), *args],
        "env": [
            {"name": "STORAGE_URI", "value": storage_uri},
            {"name": "HOME", "value": "/tmp"},  # the root filesystem is read-only
        ],
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": probe("/v2/health/ready", 5, 10),
        "livenessProbe": probe("/v2/health/live", 30, 30),
        "resources": limits,
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
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
    name = service_name(config.model_name)
    if config.serving == "visionpipe":
        args = ["--name", name, "--version", version, *serve_log_args(config)]
    else:
        args = runtime_args(config.serving, model_file)
    return inference_service(
        name=name,
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
        args=args,
        image=serving_image(config),
        logger=payload_logger(config),
        annotations={"visionpipe/prediction-log": config.serving_log}
        if config.serving_log
        else None,
    )


def serving_image(config) -> str:
    """push.serving_image, or the serving image `make serve-image` tags for this version."""
    import components

    return config.serving_image or f"visionpipe/visionpipe-serve:{components.__version__}"


def serve_log_args(config) -> list[str]:
    """A visionpipe service's own prediction log (`visionpipe serve --log ...`)."""
    if not config.serving_log:
        return []
    args = ["--log", config.serving_log, "--log-format", config.serving_log_format]
    return args + (["--log-images"] if config.serving_log_images else [])


def payload_logger(config) -> dict[str, str] | None:
    """KServe's payload logger for a Triton/TF Serving/OVMS service with push.serving_log:
    every request and response as a CloudEvent to `visionpipe collect`."""
    if not config.serving_log or config.serving == "visionpipe":
        return None
    return {"mode": "all", "url": config.serving_log_url or COLLECT_URL}


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
    uri = (predictor.get("model") or {}).get("storageUri", "") or storage_env(predictor)
    if remote and uri and not re.match(r"(gs|s3|pvc|https?|hdfs|webhdfs|oci|hf)://", uri):
        problems.append(
            f"{where}: storageUri {uri!r} is not a location KServe can read (gs://, s3://, "
            "pvc://, https://...); publish to a bucket, or copy the version there"
        )
    return problems


def storage_env(predictor: dict[str, Any]) -> str:
    """A custom predictor's STORAGE_URI (the kserve-container's environment), or ""."""
    for container in predictor.get("containers") or []:
        if isinstance(container, dict) and container.get("name") == "kserve-container":
            for env in container.get("env") or []:
                if isinstance(env, dict) and env.get("name") == "STORAGE_URI":
                    return str(env.get("value", ""))
    return ""
