"""Where the pipeline runs: Kubernetes settings baked into the compiled pipeline.

A run config says *what* to train; this says *where*. It is read from the
`kubernetes:` section of a YAML file given to `visionpipe compile / submit /
schedule --cluster FILE` (or the whole file when it has no such section), and
applied with `kfp-kubernetes` when the pipeline is compiled. Local runs
(kfp.local) ignore it.

    kubernetes:
      gpu_count: 1
      gpu_node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      image_pull_secrets: [regcred]
      service_account: visionpipe-runner
      pipeline_root: gs://my-bucket/visionpipe
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from components.common.config import StageConfig, load_config_file
from components.common.errors import UserError
from components.common.stages import TASKS
from pipelines.images import StageImages, is_reference, stage_images

QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
DURATION = re.compile(r"^[0-9]+(s|m|h)$")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "toleration_seconds"}
GPU_TASKS = ("validate", "train", "evaluate", "export")  # the tasks that can use a GPU


@dataclass
class ClusterSettings(StageConfig):
    section = "kubernetes"

    gpu_resource: str = "nvidia.com/gpu"  # the extended resource the training task requests
    gpu_count: int = 1  # 0: train on CPU (no accelerator request, in the CPU image)
    # the tasks that get the GPU image, the accelerator and the GPU node settings
    gpu_tasks: list[str] = field(default_factory=lambda: ["train"])
    # stage images, by digest for reproducible runs (registry/name@sha256:...); empty:
    # $VISIONPIPE_IMAGE / $VISIONPIPE_GPU_IMAGE, then the version tags (pipelines/images.py)
    cpu_image: str = ""
    gpu_image: str = ""
    gpu_node_selector: dict = field(default_factory=dict)  # e.g. the GPU model's node label
    node_selector: dict = field(default_factory=dict)  # every task
    # training: tolerate the taint GPU node pools carry; other tasks: none by default
    tolerations: list[dict] = field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    shm_size: str = "2Gi"  # /dev/shm (in-memory emptyDir) for tf.data workers in training
    # per-stage {cpu, memory} limits over the defaults in pipelines/pipeline.py RESOURCES
    resources: dict = field(default_factory=dict)
    image_pull_secrets: list[str] = field(default_factory=list)
    service_account: str = ""  # runs (submit / schedule) execute as this service account
    pipeline_root: str = ""  # e.g. gs://bucket/visionpipe; "" = the server's default
    # the cluster's KFP backend release: a setting it cannot run is refused at compile time
    # (pipelines/backend.py, the table in docs/cluster.md)
    kfp_version: str = "2.14.0"
    # every task's container runs as this UID:GID with runAsNonRoot (kfp-kubernetes'
    # set_security_context; the images' user is 10001:10001). 0: left to the backend and the
    # namespace. Needs a backend with kfp-kubernetes SecurityContext (kubeflow/pipelines#12832)
    task_run_as_user: int = 0
    retries: int = 2  # per task, on failure (a preempted node, a flaky read)
    retry_backoff: str = "30s"
    retry_backoff_factor: float = 2.0
    retry_backoff_max: str = "10m"

    def validate(self) -> None:
        self.check(0 <= self.gpu_count <= 16, "gpu_count", "expected 0..16")
        self.check(
            set(self.gpu_tasks) <= set(GPU_TASKS),
            "gpu_tasks",
            f"expected tasks among {', '.join(GPU_TASKS)}",
        )
        for key in ("cpu_image", "gpu_image"):
            value = getattr(self, key)
            self.check(
                not value or is_reference(value),
                key,
                "an image reference such as registry.example/visionpipe-cpu@sha256:<64 hex>",
            )
        self.check(bool(QUANTITY.match(self.shm_size)), "shm_size", "a quantity such as 2Gi")
        self.check(0 <= self.retries <= 10, "retries", "expected 0..10")
        from pipelines import backend

        try:
            declared = backend.version_tuple(self.kfp_version)
        except ValueError:
            declared = None
        self.check(declared is not None, "kfp_version", "expected a release such as 2.14.0")
        self.check(
            declared >= backend.version_tuple(backend.OLDEST_SUPPORTED),
            "kfp_version",
            f"visionpipe needs KFP backend {backend.OLDEST_SUPPORTED} (Kubeflow 1.10.1) or newer",
        )
        self.check(
            self.task_run_as_user == 0 or self.task_run_as_user >= 1000,
            "task_run_as_user",
            "expected 0 (not set) or a non-root UID such as 10001 (the images' user)",
        )
        for key in ("retry_backoff", "retry_backoff_max"):
            self.check(bool(DURATION.match(getattr(self, key))), key, "a duration such as 30s")
        self.check(self.retry_backoff_factor >= 1, "retry_backoff_factor", "expected >= 1")
        self.check(
            not self.pipeline_root or self.pipeline_root.startswith(("gs://", "s3://", "minio://")),
            "pipeline_root",
            "an object-store URI (gs://bucket/prefix) or empty",
        )
        for name in ("node_selector", "gpu_node_selector"):
            for k, v in getattr(self, name).items():
                self.check(isinstance(v, str) and bool(k), name, "string labels and values")
        for toleration in self.tolerations:
            unknown = set(toleration) - TOLERATION_KEYS
            self.check(
                not unknown and "operator" in toleration,
                "tolerations",
                f"each needs operator and may have {', '.join(sorted(TOLERATION_KEYS))}",
            )
        for stage, values in self.resources.items():
            self.check(stage in TASKS, "resources", f"tasks are {', '.join(TASKS)}")
            self.check(
                isinstance(values, dict) and set(values) <= {"cpu", "memory"},
                "resources",
                "each stage maps to {cpu: ..., memory: ...}",
            )
            for value in values.values():
                self.check(QUANTITY.match(str(value)) is not None, "resources", "quantities")


def load_cluster_settings(path: str | None) -> ClusterSettings:
    data = load_config_file(path)
    if "kubernetes" in data:
        data = data["kubernetes"]
        if not isinstance(data, dict):
            raise UserError(f"{path}: the kubernetes section must be a mapping")
    return ClusterSettings.from_dict(data)


def images_for(settings: ClusterSettings) -> StageImages:
    return stage_images(settings.cpu_image, settings.gpu_image)


def apply_task_settings(task, stage: str, settings: ClusterSettings) -> None:
    """kfp-kubernetes and retry settings of one task (compile time only)."""
    from kfp import kubernetes

    selectors = dict(settings.node_selector)
    if stage in settings.gpu_tasks and settings.gpu_count:
        selectors.update(settings.gpu_node_selector)
        for toleration in settings.tolerations:
            kubernetes.add_toleration(task, **toleration)
    for label, value in selectors.items():
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    if settings.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(settings.image_pull_secrets))
    if settings.task_run_as_user:
        kubernetes.set_security_context(
            task,
            run_as_user=settings.task_run_as_user,
            run_as_group=settings.task_run_as_user,
            run_as_non_root=True,
        )
    if stage == "train":
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=settings.shm_size,
        )
    if settings.retries:
        task.set_retry(
            num_retries=settings.retries,
            backoff_duration=settings.retry_backoff,
            backoff_factor=settings.retry_backoff_factor,
            backoff_max_duration=settings.retry_backoff_max,
        )
