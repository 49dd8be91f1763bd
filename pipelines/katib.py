"""`visionpipe tune --katib`: the same search as a Katib Experiment (kubeflow.org/v1beta1).

Each Katib trial is a batch/v1 Job running the train stage in the GPU image
(`visionpipe train --dataset <prepared dataset> --set key=value ... --print-metrics`),
so a trial trains exactly what a pipeline run's train task would. `--print-metrics`
prints `val_accuracy=...` lines per epoch, which Katib's StdOut metrics collector reads
(the objective takes the best epoch's value). The Experiment is validated against
Katib's own v1beta1 swagger definitions (schemas/katib-v1beta1-swagger.json.gz, from
kubeflow/katib pkg/apis/v1beta1/swagger.json) with unknown fields refused, and its trial
Job against the Kubernetes API models, before it is written and in `make k8s-check`.

The best trial's values go back into a run as `--set train.<key>=<value>`, or into a
config file's train section: docs/cluster.md says how.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from components.infra import schemas, storage
from components.infra.errors import UserError

API_VERSION = "kubeflow.org/v1beta1"
SCHEMA = Path(__file__).parent / "schemas" / "katib-v1beta1-swagger.json.gz"
CONTAINER = "training-container"
PLACEHOLDER_DATASET = "gs://CHANGE-ME/visionpipe/dataset"
ALGORITHMS = {"bayesian": "bayesianoptimization", "hyperband": "hyperband", "random": "random"}
EPOCHS = "epochs"  # hyperband's resource parameter


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def parameter(key: str, domain: Any) -> dict[str, Any]:
    """A Katib ParameterSpec for one search domain of the tune config."""
    from pipelines.tune.config import is_int

    if isinstance(domain, list):
        return {
            "name": key,
            "parameterType": "categorical",
            "feasibleSpace": {"list": [str(v) for v in domain]},
        }
    space: dict[str, Any] = {"min": str(domain["min"]), "max": str(domain["max"])}
    if domain.get("step"):
        space["step"] = str(domain["step"])
    if domain.get("log"):
        space["distribution"] = "logUniform"
    return {
        "name": key,
        "parameterType": "int" if is_int(key) else "double",
        "feasibleSpace": space,
    }


def trial_job(
    image: str, dataset: str, keys: list[str], fixed: dict[str, Any], settings, output: str
) -> dict[str, Any]:
    """The batch/v1 Job of one trial: the train stage with the trial's values."""
    command = ["visionpipe", "train", "--dataset", dataset, "--output", output]
    for key, value in fixed.items():
        command += ["--set", f"{key}={value}"]
    for key in keys:
        command += ["--set", f"{key}=${{trialParameters.{camel(key)}}}"]
    command.append("--print-metrics")
    resources: dict[str, Any] = {}
    if settings.gpu_count:
        resources = {
            "limits": {settings.gpu_resource: str(settings.gpu_count)},
            "requests": {settings.gpu_resource: str(settings.gpu_count)},
        }
    container: dict[str, Any] = {"name": CONTAINER, "image": image, "command": command}
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    selectors = {
        **settings.node_selector,
        **(settings.gpu_node_selector if settings.gpu_count else {}),
    }
    if selectors:
        pod["nodeSelector"] = selectors
    if settings.gpu_count and settings.tolerations:
        pod["tolerations"] = list(settings.tolerations)
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {
            "template": {
                # Katib injects its metrics collector as a sidecar; Istio's would keep the Job
                # from completing
                "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": pod,
            }
        },
    }


def search_algorithm(tune, max_epochs: int, keys: list, parameters: list, fixed: dict):
    """Katib's algorithm block and parallel trial count; hyperband also gets the epochs as
    its resource (appended to `keys` and `parameters`), the others fixed epochs."""
    algorithm: dict[str, Any] = {"algorithmName": ALGORITHMS[tune.algorithm]}
    parallel = tune.parallel_trials
    if tune.algorithm == "hyperband":  # Katib sets each trial's epochs itself
        keys.append(EPOCHS)
        parameters.append(
            {
                "name": EPOCHS,
                "parameterType": "int",
                "feasibleSpace": {"min": "1", "max": str(max_epochs)},
            }
        )
        eta = tune.hyperband_factor
        algorithm["algorithmSettings"] = [
            {"name": "resource_name", "value": EPOCHS},
            {"name": "eta", "value": str(eta)},
            {"name": "r_l", "value": str(max_epochs)},
        ]
        # Katib's hyperband refuses fewer parallel trials than eta^s_max
        s_max = int(math.log(max_epochs) / math.log(eta)) if max_epochs > 1 else 0
        parallel = max(parallel, int(math.ceil(eta**s_max)))
    else:
        fixed[EPOCHS] = max_epochs
        algorithm["algorithmSettings"] = [{"name": "random_state", "value": str(tune.seed)}]
    return algorithm, parallel


def experiment(
    configs: dict[str, dict],
    overrides: dict[str, Any],
    settings,
    dataset: str | None = None,
    name: str = "visionpipe-tune",
) -> dict[str, Any]:
    """The Experiment for the tune section of `configs` (validated whole-run sections)."""
    from components.train.config import TrainConfig
    from pipelines.cluster import images_for
    from pipelines.tune.config import TuneConfig

    tune = TuneConfig.from_dict({**configs.get("tune", {}), **overrides})
    train = dict(configs.get("train", {}))
    max_epochs = tune.max_epochs or TrainConfig.from_dict(train).epochs
    keys = list(tune.space)
    parameters = [parameter(k, d) for k, d in tune.space.items()]
    fixed = {k: v for k, v in train.items() if k not in keys and k != EPOCHS}
    algorithm, parallel = search_algorithm(tune, max_epochs, keys, parameters, fixed)
    root = (settings.pipeline_root or "").rstrip("/")
    output = f"{root}/katib/${{trialParameters.trialName}}/model" if root else "/tmp/model"
    trial_parameters = [
        {"name": camel(k), "description": f"train.{k}", "reference": k} for k in keys
    ]
    if root:
        trial_parameters.append(
            {
                "name": "trialName",
                "description": "the trial's name: where its model is kept",
                "reference": "${trialSpec.Name}",
            }
        )
    image = images_for(settings).gpu if settings.gpu_count else images_for(settings).cpu
    return {
        "apiVersion": API_VERSION,
        "kind": "Experiment",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "visionpipe"}},
        "spec": {
            "objective": {
                "type": "minimize" if tune.direction == "min" else "maximize",
                "objectiveMetricName": tune.objective,
                "additionalMetricNames": [
                    m for m in ("val_accuracy", "val_loss") if m != tune.objective
                ],
            },
            "algorithm": algorithm,
            "parallelTrialCount": parallel,
            "maxTrialCount": tune.trials,
            "maxFailedTrialCount": max(1, tune.trials // 4),
            "parameters": parameters,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "trialTemplate": {
                "primaryContainerName": CONTAINER,
                "trialParameters": trial_parameters,
                "trialSpec": trial_job(
                    image, dataset or PLACEHOLDER_DATASET, keys, fixed, settings, output
                ),
            },
        },
    }


@cache
def _schema() -> dict[str, Any]:
    swagger = schemas.load(SCHEMA)
    definitions = swagger["definitions"]
    # Kubernetes types Katib refers to (ObjectMeta, Container, an unstructured trial spec)
    # are not in its swagger: open here, the trial Job is checked by the Kubernetes models
    for ref in set(re.findall(r'"#/definitions/([^"]+)"', json.dumps(swagger))):
        definitions.setdefault(ref, {})
    closed = schemas.closed(definitions)
    return {"$ref": "#/definitions/v1beta1.Experiment", "definitions": closed}


def validate(obj: Any, where: str = "Experiment") -> list[str]:
    """Problems of a Katib Experiment: Katib's schema, the trial Job's Kubernetes schema,
    and the template's own consistency (every ${trialParameters.x} defined)."""
    from pipelines.k8s_schema import validate as validate_kubernetes

    if not isinstance(obj, dict):
        return [f"{where}: expected a mapping"]
    problems = []
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != "Experiment":
        problems.append(f"{where}: expected apiVersion {API_VERSION}, kind Experiment")
    problems += schemas.problems(_schema(), obj, where)
    spec = obj.get("spec") or {}
    template = spec.get("trialTemplate") or {}
    job = template.get("trialSpec") or {}
    if job.get("kind") == "Job":
        problems += validate_kubernetes(
            {k: v for k, v in job.items() if k not in ("apiVersion", "kind")},
            "V1Job",
            f"{where}: trialSpec",
        )
    defined = {p.get("name") for p in template.get("trialParameters") or []}
    used = set(re.findall(r"\$\{trialParameters\.([A-Za-z0-9_]+)\}", str(job)))
    problems += [
        f"{where}: trialSpec uses undefined trialParameters.{n}" for n in sorted(used - defined)
    ]
    names = {p.get("name") for p in spec.get("parameters") or []}
    for p in template.get("trialParameters") or []:
        reference = p.get("reference", "")
        if not reference.startswith("${") and reference not in names:
            problems.append(
                f"{where}: trialParameter {p.get('name')} refers to unknown {reference}"
            )
    objective = (spec.get("objective") or {}).get("objectiveMetricName")
    if not objective:
        problems.append(f"{where}: spec.objective.objectiveMetricName is missing")
    return problems


def write_experiment(
    output: str | Path, configs: dict[str, dict], overrides: dict[str, Any], settings, dataset=None
) -> Path:
    """Build, validate and write the Experiment YAML; refuse a local dataset path."""
    if dataset and not storage.is_remote(storage.check_location(dataset, "--dataset")):
        raise UserError(
            f"--dataset {dataset!r} is not in a bucket; Katib trials run in pods: pass the "
            "gs://, s3:// or minio:// URI of a prepared dataset (a pipeline run's prepare output)"
        )
    obj = experiment(configs, overrides, settings, dataset)
    problems = validate(obj)
    if problems:  # the config was validated: this is a bug in the writer
        raise ValueError("the Katib Experiment does not match Katib's schema: " + problems[0])
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    note = (
        ""
        if dataset
        else f"# replace {PLACEHOLDER_DATASET} with the gs:// URI of a prepared dataset\n"
    )
    path.write_text(
        "# Katib Experiment written by visionpipe tune --katib\n"
        + note
        + yaml.safe_dump(obj, sort_keys=False)
    )
    return path
