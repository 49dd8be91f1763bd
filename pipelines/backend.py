"""The KFP backends visionpipe runs on: what each feature needs, and what the API server checks.

`FEATURES` lists the backend (and kfp-kubernetes) features the compiled pipeline uses,
each with the first KFP backend release that runs it, from the KFP CHANGELOG (the pull
request is named) and kubeflow/manifests (which Kubeflow release ships which backend).
`kubernetes.kfp_version` in the cluster file declares the cluster's backend; `compile`,
`submit` and `schedule` refuse, with one line, a setting that backend cannot run, and say
so (a warning on stderr) where it would run with less (retries of the tasks inside the
pipeline's conditions).

`validate_package` checks a compiled pipeline the way the API server does before it
creates a run (backend/src/apiserver/template/v2_template.go): the pipeline spec and the
platform spec parsed strictly as protobuf (unknown fields refused), each task's
Kubernetes config as kfp-kubernetes' KubernetesExecutorConfig, schema version 2.1.0, the
pipeline name, and the size: 32 MiB is the upload limit, and the Argo Workflow made from
it must fit etcd's 1.5 MiB request limit, so the spec itself is held to 1 MiB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from components.infra.errors import UserError

# the Kubeflow releases (kubeflow/manifests README) and the KFP backend each ships
KUBEFLOW_RELEASES = {
    "1.9.0": "2.2.0",
    "1.9.1": "2.3.0",
    "1.10.0": "2.4.1",
    "1.10.1": "2.5.0",
    "1.10.2": "2.5.0",
    "1.11.0": "2.15.0",
}
OLDEST_SUPPORTED = "2.5.0"  # Kubeflow 1.10.1: the default pipeline runs, without fan-out
DEFAULT = "2.14.0"  # the oldest backend that runs every default setting in full
SCHEMA_VERSION = "2.1.0"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_SPEC_BYTES = 1 << 20  # the Workflow made from it must fit etcd's 1.5 MiB request limit


@dataclass(frozen=True)
class Feature:
    name: str
    since: str  # the first KFP backend release that runs it
    source: str  # where that is recorded
    used_for: str


FEATURES = (
    Feature("nodeSelector (kfp-kubernetes)", "2.0.0", "kubeflow/pipelines#9132", "node_selector, gpu_node_selector"),
    Feature("imagePullSecrets", "2.1.0", "kubeflow/pipelines#10427", "image_pull_secrets"),
    Feature("tolerations", "2.1.0", "kubeflow/pipelines#10471", "tolerations of GPU tasks"),
    Feature("emptyDir volumes", "2.3.0", "kubeflow/pipelines#10913", "/dev/shm of the train task (shm_size)"),
    Feature("task retries (Argo retryStrategy)", "2.5.0", "kubeflow/pipelines#11673", "retries"),
    Feature("dsl.If / nested sub-DAGs", "2.0.0", "KFP 2.0.0 release", "the changed and blessed conditions"),
    Feature("retries of tasks inside sub-DAGs", "2.14.0", "kubeflow/pipelines#11908", "retries of every stage (they sit under the changed condition)"),
    Feature("dsl.Collected of artifacts", "2.14.0", "kubeflow/pipelines#11725", "prepare.parallelism > 1 (the fan-out's plan and merge)"),
    Feature("securityContext (kfp-kubernetes)", "2.16.0", "kubeflow/pipelines#12832", "task_run_as_user"),
)  # fmt: skip


def version_tuple(text: str) -> tuple[int, ...]:
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", str(text).strip())
    if not match:
        raise ValueError(text)
    return tuple(int(p or 0) for p in match.groups())


def feature(name: str) -> Feature:
    return next(f for f in FEATURES if f.name == name)


def check(settings, prepare_parallelism: int = 1) -> list[str]:
    """Refuse what `settings.kfp_version` cannot run (UserError, one line); the warnings
    for what it runs with less."""
    have = version_tuple(settings.kfp_version)
    needs = []
    if prepare_parallelism > 1:
        needs.append(
            (feature("dsl.Collected of artifacts"), f"prepare.parallelism={prepare_parallelism}")
        )
    if settings.task_run_as_user:
        needs.append(
            (
                feature("securityContext (kfp-kubernetes)"),
                f"task_run_as_user={settings.task_run_as_user}",
            )
        )
    for found, setting in needs:
        if have < version_tuple(found.since):
            raise UserError(
                f"{setting} needs KFP backend {found.since} or newer ({found.name}, "
                f"{found.source}); the cluster file declares kubernetes.kfp_version="
                f"{settings.kfp_version}: upgrade the backend, or drop the setting"
            )
    warnings = []
    nested = feature("retries of tasks inside sub-DAGs")
    if settings.retries and have < version_tuple(nested.since):
        warnings.append(
            f"KFP backend {settings.kfp_version} does not retry tasks inside a condition "
            f"({nested.source}, {nested.since}): retries={settings.retries} applies to "
            "fingerprint and changes only; a preempted stage fails the run"
        )
    return warnings


def validate_package(text: str) -> list[str]:
    """Problems the API server would refuse a compiled pipeline for ([] when none)."""
    import yaml
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    problems = []
    if len(text.encode()) > MAX_SPEC_BYTES:
        problems.append(
            f"the compiled pipeline is {len(text.encode()):,} bytes, over {MAX_SPEC_BYTES:,}: "
            "its Workflow would not fit etcd's 1.5 MiB request limit"
        )
    docs = [d for d in yaml.safe_load_all(text) if d]
    specs = [d for d in docs if "pipelineInfo" in d]
    platforms = [d for d in docs if "platforms" in d]
    if len(specs) != 1 or len(platforms) > 1:
        return problems + ["expected one pipeline spec and at most one platform spec"]
    spec: dict[str, Any] = specs[0]
    try:
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    except json_format.ParseError as error:
        problems.append(f"invalid v2 pipeline spec: {error}")
    if spec.get("schemaVersion") != SCHEMA_VERSION:
        problems.append(f"schema version {spec.get('schemaVersion')!r}; KFP takes {SCHEMA_VERSION}")
    name = (spec.get("pipelineInfo") or {}).get("name", "")
    if not NAME.match(name):
        problems.append(f"pipeline name {name!r} is not lower-case alphanumerics, '-' or '.'")
    for platform in platforms:
        try:
            json_format.ParseDict(
                platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False
            )
        except json_format.ParseError as error:
            problems.append(f"invalid platform spec: {error}")
        executors = platform["platforms"].get("kubernetes", {}).get("deploymentSpec", {})
        for executor, config in executors.get("executors", {}).items():
            try:
                json_format.ParseDict(
                    config,
                    kubernetes_executor_config_pb2.KubernetesExecutorConfig(),
                    ignore_unknown_fields=False,
                )
            except json_format.ParseError as error:
                problems.append(f"{executor}: invalid Kubernetes config: {error}")
    return problems
