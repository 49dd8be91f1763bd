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

import os
import re
from dataclasses import dataclass, field

from components.infra.config import StageConfig, load_config_file
from components.infra.errors import UserError
from components.infra.stages import TASKS
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
    # s3:// and minio:// locations (pipeline root, data, registry, references): the S3 API
    # endpoint every task gets as AWS_ENDPOINT_URL_S3, and the Secret whose two keys become
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Left empty under a minio:// pipeline root,
    # they are the KFP launcher's own defaults for kfp_version (object_store_defaults); under
    # s3:// on AWS, leave them empty for the pod's IAM role (IRSA, Pod Identity)
    object_store_endpoint: str = ""
    object_store_secret: str = ""
    object_store_access_key_key: str = "accesskey"
    object_store_secret_key_key: str = "secretkey"
    object_store_region: str = ""
    # MLflow: every task gets MLFLOW_TRACKING_URI (""; the compiling process's own
    # $MLFLOW_TRACKING_URI, so the CronJob's variable reaches the tasks; neither: off) and
    # the keys of tracking_secret as the variables tracking_secret_keys names
    tracking_uri: str = ""
    tracking_secret: str = ""
    tracking_secret_keys: dict = field(
        default_factory=lambda: {
            "username": "MLFLOW_TRACKING_USERNAME",
            "password": "MLFLOW_TRACKING_PASSWORD",
        }
    )
    kfp_ui_url: str = ""  # e.g. https://kubeflow.example/pipeline: the MLflow run links to it
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
        if self.pipeline_root:
            from components.infra import storage

            storage.check_location(self.pipeline_root, "kubernetes config pipeline_root")
            self.check(
                storage.is_remote(self.pipeline_root),
                "pipeline_root",
                "an object-store URI (gs://, s3:// or minio://BUCKET/PREFIX) or empty",
            )
        self.check(
            not self.object_store_endpoint
            or re.fullmatch(r"(https?://)?[A-Za-z0-9.-]+(:[0-9]+)?/?", self.object_store_endpoint)
            is not None,
            "object_store_endpoint",
            "an S3 API endpoint such as http://minio-service.kubeflow:9000",
        )
        self.check(
            all(
                isinstance(v, str) and re.fullmatch(r"[A-Z_][A-Z0-9_]*", v)
                for v in self.tracking_secret_keys.values()
            ),
            "tracking_secret_keys",
            "a mapping of Secret keys to environment variable names",
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


MINIO_SECRET = "mlpipeline-minio-artifact"  # the KFP launcher's default artifact Secret


def object_store_defaults(settings: ClusterSettings) -> dict[str, str]:
    """The S3 endpoint, region and credentials Secret the tasks get (empty: none set).

    A `minio://` pipeline root with nothing configured reads as the KFP launcher does
    without a `kfp-launcher` ConfigMap: the in-cluster store (MinIO's
    minio-service.kubeflow:9000 before KFP 2.16, SeaweedFS's seaweedfs.kubeflow:9000 from
    2.16, kubeflow/pipelines#12613), keys from the Secret mlpipeline-minio-artifact."""
    from pipelines import backend

    endpoint, secret = settings.object_store_endpoint, settings.object_store_secret
    region = settings.object_store_region
    if settings.pipeline_root.startswith("minio://"):
        seaweed = backend.version_tuple(settings.kfp_version) >= (2, 16, 0)
        endpoint = endpoint or (
            "http://seaweedfs.kubeflow:9000" if seaweed else "http://minio-service.kubeflow:9000"
        )
        secret = secret or MINIO_SECRET
        region = region or "us-east-1"
    return {"endpoint": endpoint, "secret": secret, "region": region}


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
    # the image this task runs in, tagged on its MLflow run
    image = images_for(settings).for_task(stage, settings.gpu_count, tuple(settings.gpu_tasks))
    task.set_env_variable("VISIONPIPE_STAGE_IMAGE", image)
    tracking_uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking_uri:
        task.set_env_variable("MLFLOW_TRACKING_URI", tracking_uri)
    if settings.tracking_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=settings.tracking_secret,
            secret_key_to_env=dict(settings.tracking_secret_keys),
        )
    if settings.kfp_ui_url:
        task.set_env_variable("VISIONPIPE_KFP_UI", settings.kfp_ui_url)
    store = object_store_defaults(settings)
    if store["endpoint"]:
        task.set_env_variable("AWS_ENDPOINT_URL_S3", store["endpoint"])
    if store["region"]:
        task.set_env_variable("AWS_REGION", store["region"])
    if store["secret"]:
        kubernetes.use_secret_as_env(
            task,
            secret_name=store["secret"],
            secret_key_to_env={
                settings.object_store_access_key_key: "AWS_ACCESS_KEY_ID",
                settings.object_store_secret_key_key: "AWS_SECRET_ACCESS_KEY",
            },
        )
    if settings.retries:
        task.set_retry(
            num_retries=settings.retries,
            backoff_duration=settings.retry_backoff,
            backoff_factor=settings.retry_backoff_factor,
            backoff_max_duration=settings.retry_backoff_max,
        )
