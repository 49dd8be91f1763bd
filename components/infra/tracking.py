"""MLflow tracking: one MLflow run per pipeline run, a nested run per stage, and the
MLflow Model Registry following visionpipe's registry.

The `changes` task (first after the fingerprint, never cached) opens the pipeline's
run and hands its id down in the decision artifact; each stage then logs a nested
run from the files it has just written (its config as params, its curves and
metrics, its reports as artifacts) and copies the headline numbers onto the parent,
so one run row answers "what happened tonight". Push registers each published
version (its `source` is the version in our registry, which stays the source of
truth) and moves the alias `champion` when latest.json moves.

Where runs go: `tracking.uri`, else `MLFLOW_TRACKING_URI`; `visionpipe run` defaults
to an embedded SQLite store under its output folder. Credentials are MLflow's own
variables (`MLFLOW_TRACKING_TOKEN`, `MLFLOW_TRACKING_USERNAME`/`PASSWORD`).

Tracking never breaks a run: the first failure of MLflow or of the way to it (server
down, refused, a bad URI, an unwritable or locked store, a timeout: `tracking_errors()`)
is logged once with its reason, later calls in that process do nothing, and the reason
is appended to `$VISIONPIPE_TRACKING_STATUS` (the run folder's tracking.jsonl, read
into summary.json's `tracking`). Any other error is a bug in visionpipe's own logging
code: it is raised, never reported as a tracking failure.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.infra import progress
from components.infra.config import StageConfig

STATUS_ENV = "VISIONPIPE_TRACKING_STATUS"
CHAMPION = "champion"
MAX_PARAM = 6000  # MLflow's limit on a param value (8000 in 2.x+, kept under)
MAX_TAG = 5000  # a tag value (MLflow's limit: 8000)


@dataclass
class TrackingConfig(StageConfig):
    section = "tracking"

    # "" : $MLFLOW_TRACKING_URI (visionpipe run: sqlite under its output); "none" (here or
    # in the variable): off, said in the changes task's log
    uri: str = ""
    experiment: str = "visionpipe"
    registered_model: str = ""  # the MLflow registered model; "" = push.model_name
    # set by `visionpipe run` for its embedded store: the stage tasks append their calls to
    # this file and the run replays them into the store at the end (spooled(), replay())
    spool: str = ""

    def validate(self) -> None:
        self.check(bool(self.experiment.strip()), "experiment", "a non-empty name")


@functools.cache
def tracking_errors() -> tuple[type[BaseException], ...]:
    """What a tracking failure is: MLflow's own errors, the network's (requests' errors
    are OSErrors, as are ConnectionError, TimeoutError and a store's PermissionError;
    urllib3's are not) and an embedded store's database errors (SQLAlchemy). Never
    AttributeError, KeyError, TypeError, ImportError, ...: those are ours."""
    from mlflow.exceptions import MlflowException

    errors: list[type[BaseException]] = [MlflowException, OSError]
    with contextlib.suppress(ImportError):
        from urllib3.exceptions import HTTPError

        errors.append(HTTPError)
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import OperationalError

        errors.append(OperationalError)
    return tuple(errors)


class Tracker:
    """A guarded MLflow client: a tracking failure (`tracking_errors()`) in `guard()` is
    said once and never raised; any other error is raised."""

    def __init__(self, uri: str, where: str):
        self.uri, self.where, self.failed = uri, where, ""
        self._client = None

    @property
    def client(self):
        if self._client is None:
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # seconds, not minutes
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
            writable_store(self.uri)
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @contextlib.contextmanager
    def guard(self, what: str):
        """Yield the client, or None once tracking failed (making it included); a tracking
        failure inside the block is caught too. Either way the reason is said once."""
        if self.failed:
            yield None
            return
        try:
            client = self.client
        except ImportError as error:  # no MLflow in this image: tracking off, said once
            self.fail(what, error)
            yield None
            return
        except tracking_errors() as error:
            self.fail(what, error)
            yield None
            return
        try:
            yield client
        except tracking_errors() as error:
            self.fail(what, error)

    def fail(self, what: str, error: Exception) -> None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.failed = f"{what}: {type(error).__name__}: {first[:300]}"
        progress.log(
            self.where, f"warning: tracking failed ({self.failed}); the run goes on without it"
        )
        record_status({"stage": self.where, "failed": self.failed, "uri": self.uri})


def writable_store(uri: str) -> None:
    """An embedded SQLite store whose folder this process cannot write fails here, at once:
    MLflow itself retries opening it for about 100 s before it gives up."""
    if not uri.startswith("sqlite:///"):
        return
    folder = Path(uri[len("sqlite:///") :]).parent
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
    database = folder / Path(uri).name
    if not os.access(folder, os.W_OK) or (database.exists() and not os.access(database, os.W_OK)):
        raise PermissionError(f"cannot write the MLflow store {database} (user {os.getuid()})")


@functools.cache
def tracker_for(uri: str, where: str) -> Tracker:
    """One guarded client per store and stage in a process: one MLflow client, and one
    warning however many calls a stage makes after a failure."""
    return Tracker(uri, where)


@contextlib.contextmanager
def pipeline_client(decision: dict | None, where: str, what: str):
    """(client, the decision's tracking) for the pipeline's MLflow run; None when tracking
    is off or has failed in this process. A failure inside is caught and said once."""
    tracking = (decision or {}).get("tracking") or {}
    if not tracking.get("run_id"):
        yield None
        return
    with tracker_for(tracking["uri"], where).guard(what) as client:
        yield None if client is None else (client, tracking)


def record_status(entry: dict[str, Any]) -> None:
    path = os.environ.get(STATUS_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")


def resolve_uri(config: TrackingConfig) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI; "none" in either turns tracking off."""
    uri = config.uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    return "" if uri == "none" else uri


def artifact_location(uri: str) -> str | None:
    """For a local SQLite store, artifacts beside the database (not ./mlruns in the cwd)."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///") :]).parent / "mlartifacts")
    return None


def git_revision() -> str:
    revision = os.environ.get("VISIONPIPE_GIT_REVISION", "")
    if revision:
        return revision
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        if found.returncode == 0:
            return found.stdout.strip()
    return "unknown"


def open_pipeline_run(
    config: TrackingConfig, fingerprint: str, push: dict, kfp_run_id: str = ""
) -> dict[str, Any]:
    """Start the pipeline's MLflow run; what the stages need to log under it (or why not)."""
    uri = resolve_uri(config)
    if not uri:
        progress.log("changes", "tracking off: no tracking.uri and no MLFLOW_TRACKING_URI")
        return {"off": "no tracking.uri and no MLFLOW_TRACKING_URI"}
    tracker = tracker_for(uri, "changes")
    found: dict[str, Any] = {"uri": uri}
    with tracker.guard(f"opening a run at {uri}") as client:
        if client is not None:
            from mlflow.exceptions import MlflowException

            experiment = client.get_experiment_by_name(config.experiment)
            if experiment is None:
                with contextlib.suppress(MlflowException):  # created by a concurrent run
                    client.create_experiment(config.experiment, artifact_location(uri))
                experiment = client.get_experiment_by_name(config.experiment)
            kfp_run = kfp_run_id if kfp_run_id and "{{" not in kfp_run_id else ""
            tags = {
                "visionpipe.kind": "pipeline",
                "visionpipe.fingerprint": fingerprint,
                "visionpipe.git_revision": git_revision(),
                "mlflow.source.git.commit": git_revision(),
                "visionpipe.version": _package_version(),
            }
            if kfp_run:
                tags["kfp.run_id"] = kfp_run
                ui = os.environ.get("VISIONPIPE_KFP_UI", "").rstrip("/")
                if ui:
                    tags["kfp.run_url"] = f"{ui}/#/runs/details/{kfp_run}"
            name = os.environ.get("VISIONPIPE_RUN_ID") or time.strftime(
                "%Y%m%d-%H%M%S", time.gmtime()
            )
            run = client.create_run(experiment.experiment_id, run_name=name, tags=tags)
            found.update(
                kfp_run_id=kfp_run,
                run_id=run.info.run_id,
                experiment_id=experiment.experiment_id,
                registered_model=config.registered_model
                or push.get("model_name", "visionpipe-classifier"),
            )
            progress.log("changes", f"tracking: MLflow run {run.info.run_id} at {uri}")
            if config.spool:
                found["spool"] = config.spool
    if tracker.failed:
        return {"uri": uri, "failed": tracker.failed}
    return found


def _package_version() -> str:
    import components

    return str(components.__version__)


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"prefix.a.b": 1}` (lists and scalars kept as values)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def mlflow_name(name: str) -> str:
    """A metric or param key MLflow takes: alphanumerics, `_ - . : /` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]+", "_", name)[:250]


def numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class StageLog:
    """What one stage logs: params, metrics (name -> value, or name -> [(step, value)]),
    tags, artifacts (local files), and what of it the parent run also gets."""

    params: dict[str, Any]
    metrics: dict[str, Any]
    tags: dict[str, str]
    artifacts: list[Path]
    parent_metrics: tuple[str, ...] = ()
    parent_tags: tuple[str, ...] = ()


def log_stage(decision: dict | None, stage: str, entry: StageLog) -> str:
    """Log `entry` as a nested run of the pipeline's run; "" when tracking is off or failed
    (returns the nested run's id otherwise)."""
    if spooled(decision, stage, "log_stage", stage=stage, entry=asdict(entry)):
        return ""
    nested = ""
    with pipeline_client(decision, stage, f"logging the {stage} stage") as found:
        if found is None:
            return ""
        client, tracking = found
        from mlflow.entities import Metric, Param, RunTag

        parent = tracking["run_id"]
        named = {mlflow_name(k): str(v)[:MAX_TAG] for k, v in entry.tags.items()}
        run = client.create_run(
            tracking["experiment_id"],
            run_name=stage,
            tags={
                "mlflow.parentRunId": parent,
                "visionpipe.stage": stage,
                "visionpipe.image": os.environ.get("VISIONPIPE_STAGE_IMAGE", "local"),
                **named,
            },
        )
        nested = run.info.run_id
        now = int(time.time() * 1000)
        metrics = [
            Metric(mlflow_name(name), float(value), now, step)
            for name, series in entry.metrics.items()
            for step, value in (series if isinstance(series, list) else [(0, series)])
            if numeric(value)
        ]
        params = [Param(mlflow_name(k), str(v)[:MAX_PARAM]) for k, v in entry.params.items()]
        log_batches(client, nested, metrics, params)
        for path in entry.artifacts:
            if Path(path).is_file():
                client.log_artifact(nested, str(path), stage)
        client.set_terminated(nested)
        # the parent: this stage's params (prefixed by the stage) and its headline numbers
        upward = [m for m in metrics if m.key in set(map(mlflow_name, entry.parent_metrics))]
        upward_tags = [mlflow_name(k) for k in entry.parent_tags]
        tags = [RunTag(k, named[k]) for k in upward_tags if k in named]
        prefixed = [Param(f"{stage}.{p.key}", p.value) for p in params]
        log_batches(client, parent, upward, prefixed)
        for start in range(0, len(tags), 100):
            client.log_batch(parent, tags=tags[start : start + 100])
    return "" if tracker_for(tracking["uri"], stage).failed else nested


def log_batches(client, run_id: str, metrics: list, params: list) -> None:
    """MLflow takes at most 1000 metrics and 100 params per batch."""
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])


def close_pipeline_run(decision: dict | None, stage: str, status: str = "FINISHED") -> None:
    if spooled(decision, stage, "close_pipeline_run", stage=stage, status=status):
        return
    with pipeline_client(decision, stage, "closing the pipeline run") as found:
        if found is not None:
            client, tracking = found
            client.set_terminated(tracking["run_id"], status=status)


def tag_pipeline_run(decision: dict | None, stage: str, tags: dict[str, Any]) -> None:
    if spooled(decision, stage, "tag_pipeline_run", stage=stage, tags=tags):
        return
    with pipeline_client(decision, stage, "tagging the pipeline run") as found:
        if found is not None:
            from mlflow.entities import RunTag

            client, tracking = found
            client.log_batch(
                tracking["run_id"], tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()]
            )


def register_version(
    decision: dict | None, published: dict[str, Any], metrics_path: str = ""
) -> None:
    """Register a published version in the MLflow Model Registry; move `champion` to it
    when latest.json moved. The version's source is its folder in our registry."""
    if not published.get("pushed"):
        return
    if spooled(
        decision, "push", "register_version", published=published, metrics_path=metrics_path
    ):
        return
    with pipeline_client(decision, "push", f"registering {published['version']}") as found:
        if found is None:
            return
        client, tracking = found
        name = tracking["registered_model"]
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(
                name, description="visionpipe: the versions its registry published"
            )
        except MlflowException as error:
            if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
                raise
        tags = {
            "visionpipe.version": published["version"],
            "visionpipe.uri": published["uri"],
            "visionpipe.manifest_sha256": published.get("manifest_sha256", ""),
        }
        if metrics_path and Path(metrics_path).is_file():
            accuracy = json.loads(Path(metrics_path).read_text()).get("accuracy")
            tags["visionpipe.test_accuracy"] = str(accuracy)
        source = model_source(published["uri"], tracking)
        manifest = Path(published["uri"]) / "manifest.json"
        if source.startswith("runs:/") and manifest.is_file():  # the run holds the pointer
            client.log_artifact(tracking["run_id"], str(manifest), "push")
        version = client.create_model_version(
            name,
            source=source,
            run_id=tracking["run_id"],
            tags=tags,
            description=f"visionpipe version {published['version']} at {published['uri']}",
        )
        if published.get("latest_moved"):
            client.set_registered_model_alias(name, CHAMPION, version.version)
        progress.log(
            "push",
            f"tracking: registered {name} version {version.version} ({published['version']})"
            + (f", alias {CHAMPION}" if published.get("latest_moved") else ""),
        )


def model_source(uri: str, tracking: dict) -> str:
    """The version's `source`: a bucket URI as it is; a local folder as a file: URI for an
    embedded store, and the pipeline run's artifact path for a server (which refuses local
    sources outside a run's artifacts): the folder itself is named in the version's tags."""
    if "://" in uri:
        return uri
    if tracking["uri"].startswith(("sqlite:", "file:", "/")):
        return Path(uri).resolve().as_uri()
    return f"runs:/{tracking['run_id']}/push"


def history_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """history.csv as MLflow series: each column -> [(epoch, value)]."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return series
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = int(float(row.get("epoch", len(series.get("loss", [])))))
            for key, value in row.items():
                if key == "epoch" or value in ("", None):
                    continue
                with contextlib.suppress(ValueError):
                    series.setdefault(key, []).append((epoch, float(value)))
    return series


def spooled(decision: dict | None, where: str, call: str, **arguments: Any) -> bool:
    """With a spool (visionpipe run's embedded store), append this call to it instead of
    making it: one process, the run's own, then opens MLflow once (replay) where each
    stage task would import MLflow and open the store, seconds each. False (make the call
    now) without one, or when the spool cannot be written (said, never lost)."""
    tracking = (decision or {}).get("tracking") or {}
    spool = tracking.get("spool")
    if not spool or not tracking.get("run_id"):
        return False
    line = json.dumps({"call": call, "arguments": arguments}, default=_plain)
    try:
        with open(spool, "a") as handle:
            handle.write(line + "\n")
    except OSError as error:
        progress.log(where, f"warning: cannot append to the tracking spool ({error}); logging now")
        return False
    return True


def _plain(value: Any) -> Any:
    """JSON for what a stage log holds besides JSON's own: numpy scalars, paths."""
    return value.item() if hasattr(value, "item") else str(value)


def replay(decision: dict | None) -> dict:
    """Make the spooled calls, in their order, against the store, and return the decision
    without its spool (the caller's own calls then go to the store). A tracking failure
    is handled as each call's own (said once per stage, recorded); the spool is renamed
    `.replayed`, so nothing is made twice."""
    tracking = dict((decision or {}).get("tracking") or {})
    spool = tracking.pop("spool", None)
    direct = {**(decision or {}), "tracking": tracking}
    if not spool or not os.path.isfile(spool):
        return direct
    calls = {
        "log_stage": log_stage,
        "tag_pipeline_run": tag_pipeline_run,
        "close_pipeline_run": close_pipeline_run,
        "register_version": register_version,
    }
    with open(spool) as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    for entry in entries:
        arguments = entry["arguments"]
        if entry["call"] == "log_stage":
            logged = arguments["entry"]
            arguments["entry"] = StageLog(
                params=logged["params"],
                metrics=logged["metrics"],
                tags=logged["tags"],
                artifacts=[Path(p) for p in logged["artifacts"]],
                parent_metrics=tuple(logged["parent_metrics"]),
                parent_tags=tuple(logged["parent_tags"]),
            )
        calls[entry["call"]](direct, **arguments)
    os.replace(spool, f"{spool}.replayed")
    return direct
