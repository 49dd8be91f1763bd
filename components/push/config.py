"""The push stage's config."""

from __future__ import annotations

from dataclasses import dataclass

from components.infra.config import StageConfig

# components/push/serving.py writes the first four; auto: the fastest verified server file
RUNTIMES = ("triton", "tensorflow", "openvino", "visionpipe", "auto", "none")
LOG_FORMATS = ("jsonl", "parquet")


@dataclass
class PushConfig(StageConfig):
    """Where blessed, verified exports are published."""

    section = "push"

    registry: str = ""  # a folder or gs://bucket/prefix; empty: do not push
    model_name: str = "visionpipe-classifier"
    version: str = ""  # empty: UTC time plus the first 8 hex digits of the ONNX file's hash
    # the KServe InferenceService written beside each version (inferenceservice.yaml):
    # triton (model.onnx in a Triton model repository) | tensorflow (the SavedModel under
    # TF Serving) | openvino (OVMS) | visionpipe (`visionpipe serve` from serving_image on
    # the fastest verified ONNX/OpenVINO file) | auto | none
    serving: str = "triton"
    # visionpipe: the serving image (`make serve-image`); empty: visionpipe/visionpipe-serve
    # tagged with this version (kustomize or this key names the registry's copy)
    serving_image: str = ""
    # prediction logs of the deployed service (a folder, gs://, s3://, minio://); empty: none.
    # visionpipe: the server writes them itself; triton/tensorflow/openvino: KServe's payload
    # logger posts to serving_log_url, where `visionpipe collect --log <this>` writes them
    serving_log: str = ""
    serving_log_url: str = ""  # empty: http://visionpipe-collect:8081/ (docs/cluster.md)
    serving_log_images: bool = False  # visionpipe: also keep each request image (privacy!)
    serving_log_format: str = "jsonl"  # visionpipe: jsonl | parquet shards
    # triton: serve model_int8.onnx; openvino: model_int8.xml (faster on server CPUs)
    serving_int8: bool = False
    serving_gpus: int = 0  # nvidia.com/gpu per predictor pod
    serving_cpu: str = "1"
    serving_memory: str = "2Gi"
    serving_runtime_version: str = ""  # the runtime image tag; empty: the cluster's default
    serving_max_batch: int = 32  # triton: the largest batch dynamic batching forms
    serving_min_replicas: int = 1
    serving_max_replicas: int = 1
    # the predictor's service account: on s3:// / minio:// its Secret carries the keys and the
    # serving.kserve.io/s3-endpoint annotations KServe reads (docs/cluster.md, Object stores)
    serving_service_account: str = ""

    def validate(self) -> None:
        self.check_locations("registry")
        import re

        self.check(
            re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.model_name) is not None,
            "model_name",
            "expected letters, digits, '.', '_' or '-'",
        )
        self.check(
            self.version == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.version),
            "version",
            "expected empty (automatic) or letters, digits, '.', '_' or '-'",
        )
        self.check(self.serving in RUNTIMES, "serving", f"expected one of {', '.join(RUNTIMES)}")
        self.check(self.serving_gpus >= 0, "serving_gpus", "expected >= 0")
        self.check_serve_log()
        quantity = r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?"
        self.check(
            re.fullmatch(quantity, self.serving_cpu) is not None,
            "serving_cpu",
            "expected a Kubernetes quantity such as 1, 500m or 2",
        )
        self.check(
            re.fullmatch(quantity, self.serving_memory) is not None,
            "serving_memory",
            "expected a Kubernetes quantity such as 2Gi or 512Mi",
        )
        self.check(
            not (
                self.serving == "tensorflow"
                and self.serving_gpus
                and not self.serving_runtime_version
            ),
            "serving_runtime_version",
            "TF Serving on a GPU needs its GPU image: set a -gpu tag such as 2.6.2-gpu",
        )
        self.check(
            not self.serving_service_account
            or re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", self.serving_service_account),
            "serving_service_account",
            "a Kubernetes service account name (lowercase letters, digits, '-', '.')",
        )
        self.check(1 <= self.serving_max_batch <= 4096, "serving_max_batch", "expected 1..4096")
        self.check(
            1 <= self.serving_min_replicas <= self.serving_max_replicas,
            "serving_min_replicas",
            "expected 1 <= serving_min_replicas <= serving_max_replicas",
        )

    def check_serve_log(self) -> None:
        """The keys of push.serving: visionpipe and of the prediction log."""
        import re

        self.check_locations("serving_log")
        self.check(
            self.serving_log_format in LOG_FORMATS,
            "serving_log_format",
            f"expected one of {', '.join(LOG_FORMATS)}",
        )
        self.check(
            not self.serving_log_url or re.match(r"https?://[^/\s]+", self.serving_log_url),
            "serving_log_url",
            "expected an http(s):// URL of `visionpipe collect` (or empty for the default)",
        )
        self.check(
            not (self.serving == "visionpipe" and self.serving_gpus),
            "serving_gpus",
            "push.serving=visionpipe runs ONNX Runtime/OpenVINO on CPU: set serving_gpus 0",
        )
        self.check(
            not self.serving_image or re.fullmatch(r"[^\s:@/][^\s]*", self.serving_image),
            "serving_image",
            "expected an image reference such as visionpipe/visionpipe-serve:0.1.0",
        )
