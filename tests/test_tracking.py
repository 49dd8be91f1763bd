"""MLflow tracking of whole runs, against a real MLflow tracking server (SQLite backend)
started by the test on localhost, read back with MlflowClient; and the registry's
history of nights (`visionpipe history`)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from components.infra import registry, storage
from tests.conftest import VISIONPIPE, write_digit_images


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free port, SQLite backend and a local artifact root."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    process = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
        + ["--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1"],
        stdout=open(root / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            assert process.poll() is None, (root / "server.log").read_text()[-2000:]
            assert time.time() < deadline, "the MLflow server did not start"
            time.sleep(0.5)
    yield url, process
    if process.poll() is None:
        process.terminate()
        process.wait(30)


def run_pipeline(tmp_path, run_id, uri, *extra):
    """A small tracked run: 3 digit classes x 60 images, 10 short epochs (what
    test_pipeline's user-folder run shows blesses), the three contract formats: what is
    tracked does not depend on the data's size or on the optional formats, and every
    stage, parity and latency still reach MLflow."""
    env = {**os.environ, "VISIONPIPE_CACHE": os.environ.get("VISIONPIPE_CACHE", "")}
    if uri is None:
        env.pop("MLFLOW_TRACKING_URI", None)
    else:
        env["MLFLOW_TRACKING_URI"] = uri
    data = tmp_path / "photos"
    if not data.exists():
        write_digit_images(data, per_class=60)
    return subprocess.run(
        [VISIONPIPE, "run", "--data", str(data), "--output", str(tmp_path / "runs")]
        + ["--preset", "smoke", "--run-id", run_id, "--set", "train.epochs=10"]
        + ["--set", "train.batch_size=16"]
        + ["--set", "export.formats=saved_model,tflite,onnx", *extra],
        capture_output=True,
        text=True,
        env=env,
    )


def pipeline_run(client, summary):
    """The pipeline's MLflow run and its nested stage runs, by name."""
    run = client.get_run(summary["tracking"]["run_id"])
    nested = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    return run, {r.info.run_name: r for r in nested}


def check_tracked(client, summary, registry_base, epochs="3"):
    """What a tracked, published run must hold (the issue's bars)."""
    run, stages = pipeline_run(client, summary)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == summary["test_accuracy"]
    assert run.data.params["train.epochs"] == epochs
    assert run.data.params["train.optimizer"] == "adamw"  # resolved defaults too
    epochs = json.loads((Path(summary["artifacts"]["model"]).parent / "metrics.json").read_text())
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == list(range(epochs["epochs_run"]))
    assert set(stages) == {"validate", "train", "evaluate", "export", "push"}
    train_history = client.get_metric_history(stages["train"].info.run_id, "val_accuracy")
    assert len(train_history) == epochs["epochs_run"]
    tags = run.data.tags
    assert tags["visionpipe.fingerprint"] == summary["fingerprint"]
    assert tags["blessed"] == "true" and tags["outcome"] == "published"
    assert tags["visionpipe.git_revision"] and tags["kfp.run_id"]
    latest = json.loads(storage.read_bytes(f"{registry_base}/latest.json"))
    assert tags["published_version"] == latest["version"]
    evaluate = stages["evaluate"]
    assert evaluate.data.metrics["test_accuracy"] == summary["test_accuracy"]
    assert any(m.startswith("test.class.") for m in evaluate.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id, "evaluate")}
    assert {"evaluate/report.html", "evaluate/confusion_matrix.png"} <= artifacts
    export = stages["export"].data.metrics
    assert export["parity.onnx.top1_agreement"] >= 0.99 and "latency.onnx.median_ms" in export
    champion = client.get_model_version_by_alias("visionpipe-classifier", "champion")
    assert champion.tags["visionpipe.version"] == latest["version"]
    assert champion.run_id == run.info.run_id
    return run


@pytest.mark.slow
def test_a_run_is_tracked_on_a_server_and_a_dead_server_breaks_nothing(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    url, process = mlflow_server
    done = run_pipeline(tmp_path, "tracked", url)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "tracked" / "summary.json").read_text())
    assert summary["tracking"]["uri"] == url and summary["tracking"]["failed"] == []
    base = tmp_path / "runs" / "registry" / "visionpipe-classifier"
    check_tracked(MlflowClient(url), summary, str(base), epochs="10")
    assert f"mlflow run   {summary['tracking']['run_id']} at {url}" in done.stdout

    process.terminate()  # the server goes away; the same night again (unchanged: 10 s)
    process.wait(30)
    again = run_pipeline(tmp_path, "dead", url)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((tmp_path / "runs" / "dead" / "summary.json").read_text())
    assert second["status"] == "succeeded" and second["changed"] is False
    assert second["tracking"]["failed"] and "opening a run" in second["tracking"]["failed"][0]
    assert "tracking     FAILED" in again.stdout
    warned = (tmp_path / "runs" / "dead" / "tracking.jsonl").read_text().splitlines()
    assert len(warned) == 1  # warned once, by the task that opens the run


def test_history_appends_race_free_on_every_store(object_store):
    base = f"{object_store}/hist-{time.time_ns()}/model"

    def append(worker):
        for night in range(8):
            assert registry.append_history(base, {"worker": worker, "night": night})

    threads = [threading.Thread(target=append, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = registry.read_history(base)
    assert sorted((r["worker"], r["night"]) for r in rows) == [
        (w, n) for w in range(3) for n in range(8)
    ]


def test_history_prints_a_table_and_writes_a_page_and_a_plot(tmp_path, capsys):
    from pipelines.cli import main

    base = str(tmp_path / "registry" / "visionpipe-classifier")
    nights = [
        {"date": "2026-12-01T03:00:00Z", "version": "v1", "test_accuracy": 0.95,
         "macro_f1": 0.94, "data_total": 1000, "reasons": [], "latest_moved": True},
        {"date": "2026-12-02T03:00:00Z", "version": None, "test_accuracy": 0.41,
         "macro_f1": 0.30, "data_total": 1100, "blessed": False,
         "reasons": ["validate: new images labelled '8' read as '3'"]},
        {"date": "2026-12-03T03:00:00Z", "version": "v2", "test_accuracy": 0.97,
         "macro_f1": 0.96, "data_total": 1200, "reasons": [], "latest_moved": True},
    ]  # fmt: skip
    for night in nights:
        registry.append_history(base, night)
    assert main(["history", base, "--output", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "date", "outcome", "version", "test_accuracy", "macro_f1", "data_total", "reason"
    ]  # fmt: skip
    assert out[2].split()[:6] == [
        "2026-12-02T03:00:00Z",
        "refused",
        "-",
        "0.4100",
        "0.3000",
        "1100",
    ]
    assert "read as '3'" in out[2]
    html = (tmp_path / "h" / "history.html").read_text()
    assert "validate: new images labelled" in html and "<img" in html
    assert (tmp_path / "h" / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["history", str(tmp_path / "nothing"), "--output", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("how", ["cluster file", "environment"])
def test_every_compiled_task_gets_the_tracking_uri_and_credentials(tmp_path, monkeypatch, how):
    """The compiled pipeline passes MLflow on: MLFLOW_TRACKING_URI in every task (from the
    cluster file, or the compiling process's own variable, as the CronJob's submit has it)
    and the credentials from a Kubernetes Secret."""
    import yaml

    from pipelines.cluster import ClusterSettings
    from pipelines.pipeline import compile_pipeline
    from tests.kfp_spec import all_tasks

    uri = "http://mlflow.mlflow.svc.cluster.local:5000"
    settings = {"tracking_secret": "mlflow-credentials"}
    if how == "cluster file":
        settings["tracking_uri"] = uri
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = compile_pipeline(str(tmp_path / "p.yaml"), ClusterSettings.from_dict(settings))
    spec, platform = list(yaml.safe_load_all(open(path).read()))
    executors = spec["deploymentSpec"]["executors"]
    platform = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, task in all_tasks(spec).items():
        executor = task["componentRef"]["name"].replace("comp-", "exec-")
        env = {e["name"]: e["value"] for e in executors[executor]["container"].get("env", [])}
        assert env["MLFLOW_TRACKING_URI"] == uri, name
        assert env["VISIONPIPE_STAGE_IMAGE"], name
        (secret,) = platform[executor]["secretAsEnv"]
        assert secret["secretName"] == "mlflow-credentials"
        assert {k["envVar"] for k in secret["keyToEnv"]} == {
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        }
    changes = all_tasks(spec)["changes"]["inputs"]["parameters"]
    assert "tracking_config" in changes and "kfp_run_id" in changes


def test_a_store_that_cannot_even_be_opened_breaks_nothing(tmp_path, monkeypatch):
    """The client itself failing to come up (an embedded store in a folder this process
    cannot write, as a container's user may find it) is said once and returns at once."""
    from components.infra.tracking import TrackingConfig, open_pipeline_run

    status = tmp_path / "tracking.jsonl"
    monkeypatch.setenv("VISIONPIPE_TRACKING_STATUS", str(status))
    started = time.time()
    found = open_pipeline_run(TrackingConfig(uri="sqlite:////proc/visionpipe/mlflow.db"), "f", {})
    assert "cannot write the MLflow store" in found["failed"] and "run_id" not in found
    assert time.time() - started < 30  # not MLflow's own 100 s of retries
    assert len(status.read_text().splitlines()) == 1


@pytest.fixture(scope="module")
def stopped_night(tmp_path_factory):
    """A night validate stops, made by the real prepare and validate stages: yesterday's
    dataset (digits 0, 1 and 7, 30 images each at 16 px) is the reference; today's has
    lost the 7s and brought 30 new images of each other digit. 60 new and 60 known
    images are enough for every check that needs no model to run and give a value
    (schema and class counts flag the lost class; the model checks say they have no model)."""
    from components.infra.errors import UserError
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.validate.config import ValidateConfig
    from components.validate.core import run as validate
    from tests.conftest import write_digit_images

    root = tmp_path_factory.mktemp("stopped-night")
    yesterday = write_digit_images(root / "yesterday", (0, 1, 7), per_class=30, size=16)
    today = write_digit_images(root / "today", (0, 1), per_class=60, size=16)
    prepare(PrepareConfig(image_size=16), str(yesterday), root / "reference")
    prepare(PrepareConfig(image_size=16), str(today), root / "dataset")
    with pytest.raises(UserError, match="nothing was trained"):
        validate(ValidateConfig(), root / "dataset", root / "validation", str(root / "reference"))
    return root


def embedded_run(tmp_path, monkeypatch) -> dict:
    """A pipeline run opened in a real embedded MLflow store (as `visionpipe run` has it)."""
    from components.infra.tracking import TrackingConfig, open_pipeline_run

    monkeypatch.setenv("VISIONPIPE_TRACKING_STATUS", str(tmp_path / "tracking.jsonl"))
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking = open_pipeline_run(config, "fingerprint", {"model_name": "m"})
    assert tracking.get("run_id"), tracking
    return {"tracking": tracking}


def test_a_night_stopped_by_validate_leaves_each_check_in_mlflow(
    tmp_path, monkeypatch, capfd, stopped_night
):
    from mlflow import MlflowClient

    from components.infra.tracking_stages import validate_log
    from pipelines.runtime import track

    decision = embedded_run(tmp_path, monkeypatch)
    validation, dataset = stopped_night / "validation", stopped_night / "dataset"
    track(decision, "validate", lambda: validate_log({}, validation, dataset))
    assert "tracking failed" not in capfd.readouterr().err
    assert not (tmp_path / "tracking.jsonl").exists()  # no failure recorded

    client = MlflowClient(decision["tracking"]["uri"])
    run, stages = pipeline_run(client, {"tracking": decision["tracking"]})
    nested = stages["validate"].data
    saved = json.loads((validation / "anomalies.json").read_text())
    verdicts = {c["check"]: c["verdict"] for c in saved["checks"]}
    assert verdicts["schema"] == verdicts["class_counts"] == "anomaly"
    for check, verdict in verdicts.items():
        assert nested.tags[f"validation.{check}.verdict"] == verdict, check
        assert run.data.tags[f"validation.{check}.verdict"] == verdict, check  # one row
    assert not any("None" in key for key in nested.metrics), sorted(nested.metrics)
    drift = next(c for c in saved["checks"] if c["check"] == "class_drift")
    assert nested.metrics["validation.class_drift.value"] == drift["value"]
    assert nested.metrics["validation.class_counts.value.digit_7.drop"] == 1.0
    assert nested.metrics["validation.changed_labels.value"] == 0
    assert nested.metrics["validation.anomalies"] == len(saved["anomalies"]) >= 2
    assert "classes removed" in nested.tags["validation.anomalies"]
    assert "no model" in nested.tags["validation.label_agreement.reason"]


def test_a_bug_in_our_logging_code_is_raised_not_taken_for_a_dead_server(tmp_path, monkeypatch):
    """Only MLflow's and the network's errors are tracking failures; our own raise."""
    from components.infra.tracking import StageLog, log_stage
    from pipelines.runtime import track

    decision = embedded_run(tmp_path, monkeypatch)
    series_without_steps = StageLog(params={}, metrics={"loss": [0.5, 0.4]}, tags={}, artifacts=[])
    with pytest.raises(TypeError):
        log_stage(decision, "train", series_without_steps)
    with pytest.raises(KeyError):
        track(decision, "evaluate", lambda: {}["metrics"])
    assert not (tmp_path / "tracking.jsonl").exists()
    # and a real tracking failure is still caught, said once, and recorded
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from components.infra.tracking import TrackingConfig, open_pipeline_run

    found = open_pipeline_run(TrackingConfig(uri=dead), "fingerprint", {})
    assert "opening a run" in found["failed"] and "run_id" not in found
    assert len((tmp_path / "tracking.jsonl").read_text().splitlines()) == 1


def test_spooled_calls_reach_the_store_only_when_replayed_and_only_once(tmp_path):
    """visionpipe run's embedded store: the stage tasks append their calls to a spool and
    the run replays them (one MLflow import instead of one per task). Nothing reaches the
    store before the replay; after it the nested run, its curves and artifact, the parent's
    headline metric, tags and status are there as direct logging leaves them; a second
    replay adds nothing."""
    import numpy as np
    from mlflow import MlflowClient

    from components.infra.tracking import (
        StageLog,
        TrackingConfig,
        close_pipeline_run,
        log_stage,
        open_pipeline_run,
        replay,
        tag_pipeline_run,
    )

    uri, spool = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "spool.jsonl"
    found = open_pipeline_run(TrackingConfig(uri=uri, spool=str(spool)), "fp-1", {})
    assert found["spool"] == str(spool)
    decision = {"tracking": found}
    report = tmp_path / "report.html"
    report.write_text("<p>report</p>")
    entry = StageLog(
        params={"epochs": 2},
        metrics={"val_accuracy": [(0, 0.5), (1, np.float32(0.75))], "accuracy": 0.9},
        tags={"verdict": "pass"},
        artifacts=[report],
        parent_metrics=("accuracy",),
    )
    assert log_stage(decision, "train", entry) == ""
    tag_pipeline_run(decision, "push", {"outcome": "published"})
    close_pipeline_run(decision, "push")
    assert len(spool.read_text().splitlines()) == 3
    client = MlflowClient(uri)
    run = client.get_run(found["run_id"])
    assert run.info.status == "RUNNING" and "outcome" not in run.data.tags
    nested = f"tags.mlflow.parentRunId = '{found['run_id']}'"
    assert client.search_runs([found["experiment_id"]], nested) == []

    direct = replay(decision)
    assert "spool" not in direct["tracking"] and not spool.exists()
    assert (tmp_path / "spool.jsonl.replayed").is_file()
    run = client.get_run(found["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "published"
    assert run.data.metrics["accuracy"] == 0.9 and run.data.params["train.epochs"] == "2"
    (train,) = client.search_runs([found["experiment_id"]], nested)
    assert train.info.run_name == "train" and train.data.tags["verdict"] == "pass"
    curve = client.get_metric_history(train.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in curve] == [(0, 0.5), (1, 0.75)]
    assert [a.path for a in client.list_artifacts(train.info.run_id, "train")] == [
        "train/report.html"
    ]
    replay(decision)  # the spool is gone: nothing is made twice
    assert len(client.search_runs([found["experiment_id"]], nested)) == 1
