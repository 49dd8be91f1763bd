"""Submitting to a Kubeflow Pipelines server: upload (or add a version), run, schedule.

Everything goes through `kfp.Client` (the KFP v2beta1 REST API); nothing here
talks HTTP itself. Authentication, as the client supports it:
  --token T / KF_PIPELINES_TOKEN   a bearer token (e.g. `gcloud auth print-identity-token`)
  --in-cluster                     the pod's projected service-account token
  --google                         Google application-default credentials (GKE, Vertex)
  (none)                           no auth, or the client's own kube-context / IAP logic
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.infra.errors import UserError
from pipelines.pipeline import PIPELINE_NAME

TERMINAL_OK = {"SUCCEEDED"}


@dataclass
class Auth:
    token: str | None = None
    in_cluster: bool = False
    google: bool = False


def make_client(host: str, auth: Auth, namespace: str | None = None):
    """A kfp.Client for `host` with the chosen authentication."""
    import kfp

    if not re.match(r"^https?://", host or ""):
        raise UserError(f"--host {host!r} is not a URL; pass e.g. https://kfp.example.com")
    kwargs: dict[str, Any] = {"host": host.rstrip("/")}
    if namespace:
        kwargs["namespace"] = namespace
    chosen = sum(bool(x) for x in (auth.token, auth.in_cluster, auth.google))
    if chosen > 1:
        raise UserError("choose one of --token, --in-cluster and --google")
    token = auth.token or os.environ.get("KF_PIPELINES_TOKEN")
    if auth.in_cluster:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials()
    elif auth.google:
        token = google_token()
    if token and not auth.in_cluster:
        kwargs["existing_token"] = token
    return kfp.Client(**kwargs)


def google_token() -> str:
    try:
        import google.auth
        import google.auth.transport.requests
    except ImportError:  # pragma: no cover - google-auth comes with google-cloud-storage
        raise UserError("--google needs the google-auth package") from None
    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        credentials.refresh(google.auth.transport.requests.Request())
    except Exception as error:  # DefaultCredentialsError, RefreshError
        raise UserError(
            f"--google: no usable Google credentials ({error}); run "
            "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from None
    return credentials.token


CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


def validate_cron(expression: str) -> str:
    """KFP (robfig/cron) wants six fields, seconds first: `0 0 3 * * *` is 03:00 daily."""
    fields = expression.split()
    if len(fields) == 5:
        raise UserError(
            f"cron {expression!r} has 5 fields, but KFP cron has 6 with seconds first; "
            f"for this schedule write {'0 ' + expression!r}"
        )
    if len(fields) != 6 or not all(CRON_FIELD.match(f) for f in fields):
        raise UserError(
            f"cron {expression!r} is invalid; expected 6 space-separated fields "
            "(second minute hour day-of-month month day-of-week), e.g. '0 0 3 * * *'"
        )
    ranges = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    for name, field, (low, high) in zip(
        ("second", "minute", "hour", "day-of-month", "month", "day-of-week"),
        fields,
        ranges,
        strict=True,
    ):
        for number in re.findall(r"\d+", field.split("/")[0]):
            if not low <= int(number) <= high:
                raise UserError(f"cron {expression!r}: {name} {number} is outside {low}-{high}")
    return expression


def pipeline_params(configs: dict[str, dict], data: str) -> dict[str, Any]:
    """Pipeline parameters: the data source and each stage's validated config."""
    params: dict[str, Any] = {"data": data}
    for section, values in configs.items():
        if values:
            params[f"{section}_config"] = values
    return params


def upload(client, package: str, name: str, version: str) -> tuple[str, str]:
    """Upload the pipeline, or a new version of it when `name` exists; (pipeline id, version id)."""
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=name)
        pipeline_id = pipeline.pipeline_id
        versions = client.list_pipeline_versions(
            pipeline_id, page_size=1, sort_by="created_at desc"
        )
        version_id = versions.pipeline_versions[0].pipeline_version_id
    else:
        created = client.upload_pipeline_version(
            package, pipeline_version_name=version, pipeline_id=pipeline_id
        )
        version_id = created.pipeline_version_id
    return pipeline_id, version_id


def compiled_package(settings=None, prepare_parallelism: int = 1) -> str:
    from pipelines.pipeline import compile_pipeline

    folder = tempfile.mkdtemp(prefix="visionpipe-submit-")
    return compile_pipeline(str(Path(folder) / "visionpipe.yaml"), settings, prepare_parallelism)


def prepare_parallelism(params: dict[str, Any]) -> int:
    """prepare.parallelism shapes the DAG (how many scan and encode tasks), so it is read
    when the pipeline is compiled, not only by the tasks."""
    return int((params.get("prepare_config") or {}).get("parallelism", 1))


def version_name() -> str:
    """Unique per upload: package version, git revision when known, UTC time."""
    import components

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    revision = os.environ.get("VISIONPIPE_GIT_REVISION", "")
    return "-".join(x for x in (f"v{components.__version__}", revision, stamp) if x)


def publish(
    client, experiment: str, pipeline_name: str, settings, parallelism: int = 1
) -> dict[str, str]:
    """Compile, upload (a new version when the pipeline exists), find or create the
    experiment: the ids a run or a recurring run is created with, and the version name."""
    package = compiled_package(settings, parallelism)
    version = version_name()
    pipeline_id, version_id = upload(client, package, pipeline_name, version)
    return {
        "pipeline_id": pipeline_id,
        "version_id": version_id,
        "experiment_id": client.create_experiment(experiment).experiment_id,
        "version_name": version,
    }


def submit(
    client,
    params: dict[str, Any],
    experiment: str,
    run_name: str | None = None,
    pipeline_name: str = PIPELINE_NAME,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    settings=None,
) -> dict[str, str]:
    ids = publish(client, experiment, pipeline_name, settings, prepare_parallelism(params))
    version = ids.pop("version_name")
    run = client.run_pipeline(
        ids["experiment_id"],
        run_name or f"{pipeline_name} {version}",
        params=params,
        pipeline_id=ids["pipeline_id"],
        version_id=ids["version_id"],
        pipeline_root=pipeline_root,
        service_account=service_account,
    )
    return {"run_id": run.run_id, **ids}


def wait(client, run_id: str, timeout: int, poll: int = 10) -> str:
    """Follow the run to its end; return its final state."""
    run = client.wait_for_run_completion(run_id, timeout=timeout, sleep_duration=poll)
    return str(run.state)


def schedule(
    client,
    params: dict[str, Any],
    experiment: str,
    cron: str,
    name: str,
    pipeline_name: str = PIPELINE_NAME,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    catchup: bool = False,
    settings=None,
) -> dict[str, str]:
    validate_cron(cron)
    # every run of it fingerprints the data first: a night with new data re-prepares,
    # a night without reuses the cached dataset
    ids = publish(client, experiment, pipeline_name, settings, prepare_parallelism(params))
    ids.pop("version_name")
    recurring = client.create_recurring_run(
        ids["experiment_id"],
        name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=not catchup,
        params=params,
        pipeline_id=ids["pipeline_id"],
        version_id=ids["version_id"],
        enabled=True,
        pipeline_root=pipeline_root,
        service_account=service_account,
    )
    return {"recurring_run_id": recurring.recurring_run_id, **ids}
