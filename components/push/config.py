"""The push stage's config."""

from __future__ import annotations

from dataclasses import dataclass

from components.infra.config import StageConfig

# components/push/serving.py writes the first three; auto: the fastest verified server file
RUNTIMES = ("triton", "tensorflow", "openvino", "auto", "none")


@dataclass
class PushConfig(StageConfig):
    """Where blessed, verified exports are published."""

    section = "push"

    registry: str = ""  # a folder or gs://bucket/prefix; empty: do not push
    model_name: str = "visionpipe-classifier"
    version: str = ""  # empty: UTC time plus the first 8 hex digits of the ONNX file's hash
    # the KServe InferenceService written beside each version (inferenceservice.yaml):
    # triton (model.onnx in a Triton model repository) | tensorflow (the SavedModel under
    # TF Serving) | none
    serving: str = "triton"
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
