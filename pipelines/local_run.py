"""`visionpipe run`: the whole pipeline with kfp.local, then `summary.json`.

Layout of one run:
  <output>/<run-id>/summary.json       the contract (see docs/design.md)
  <output>/<run-id>/kfp/...            kfp.local's pipeline root (every task's outputs)
  <output>/<run-id>/logs/              every task's full log, and the runner's
  <output>/<run-id>/{dataset,model,evaluation,export}  links to the stage folders
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from components.infra import progress
from components.infra.artifacts import read_json, write_json
from components.infra.errors import StageFailed, UserError
from components.infra.stages import OUTPUTS
from components.infra.tracking import STATUS_ENV
from pipelines.console import strip_ansi
from pipelines.runkey import with_registry
from pipelines.runtime import USER_ERROR_FILE

TASK_OUTPUTS = {  # link name -> (task, output)
    link: (stage, output) for stage, (output, link) in OUTPUTS.items() if link
}
PUSH_OUTPUT = ("push", OUTPUTS["push"][0])


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def init_runner(runner: str, pipeline_root: Path) -> None:
    from kfp import local

    if runner == "subprocess":
        handler = local.SubprocessRunner(use_venv=False)
    elif runner == "docker":
        handler = local.DockerRunner()
    else:
        raise UserError(f"unknown runner {runner!r}; expected subprocess or docker")
    local.init(runner=handler, pipeline_root=str(pipeline_root), raise_on_error=True)


def run_pipeline(
    data: str,
    configs: dict[str, dict[str, Any]],
    output: str | Path,
    runner: str = "subprocess",
    run_id: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the DAG locally; return (and write) the run summary.

    kfp.local's output goes in full to `<run>/logs/` (one file per task and the
    runner's); the terminal gets the stage lines (pipelines/console.py), or
    everything with `verbose`.
    """
    from pipelines.console import captured_stdout
    from pipelines.pipeline import make_pipeline

    run_id = run_id or new_run_id()
    run_dir = Path(output).resolve() / run_id
    pipeline_root = run_dir / "kfp"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    if runner == "docker":
        # DockerRunner mounts only the pipeline root, at the same path, into containers that
        # run as the image's non-root user: it must be writable, and a local registry must
        # live under it to be seen from the host
        pipeline_root.chmod(0o777)
        push = configs.get("push", {})
        registry = push.get("registry", "")
        if registry and "://" not in registry and not registry.startswith(str(pipeline_root)):
            configs = {**configs, "push": {**push, "registry": str(pipeline_root / "registry")}}
        data = stage_local_data(data, pipeline_root)
    configs = with_registry(configs)  # keep_splits, the gate and validate: push's registry
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # the stage subprocesses import `components` from this checkout / installed package
    init_runner(runner, pipeline_root)
    # kfp.local warns that resource requests and image names mean nothing locally: known
    warnings.filterwarnings(
        "ignore",
        message=r".*(no effect in the current local runner|"
        r"custom or non-Python base image).*",
    )
    # DockerRunner's containers see only the pipeline root: the embedded store lives there
    store = pipeline_root if runner == "docker" else Path(output).resolve()
    configs = with_embedded_tracking(configs, store, pipeline_root / "tracking-spool.jsonl")
    status_file = run_dir / TRACKING_STATUS_FILE
    status_file.unlink(missing_ok=True)
    os.environ[STATUS_ENV] = str(status_file)  # the stage subprocesses inherit it
    os.environ["VISIONPIPE_RUN_ID"] = run_id
    logs = run_dir / "logs"
    progress.log("run", f"run {run_id}: data {data}, runner {runner}, outputs in {run_dir}")
    progress.log("run", f"full task logs: {logs}/")
    started = time.time()
    error: BaseException | None = None
    pipeline = make_pipeline()
    try:
        with captured_stdout(logs, verbose):
            pipeline(
                data=data,
                prepare_config=configs.get("prepare", {}),
                validate_config=configs.get("validate", {}),
                train_config=configs.get("train", {}),
                evaluate_config=configs.get("evaluate", {}),
                export_config=configs.get("export", {}),
                push_config=configs.get("push", {}),
                tracking_config=configs.get("tracking", {}),
            )
    except RuntimeError as caught:  # kfp.local: "Pipeline ... finished with status FAILURE"
        error = caught
    summary = summarize(run_id, run_dir, pipeline_root, data, time.time() - started, error)
    write_json(run_dir / "summary.json", summary)
    if error is not None:
        user_error = find_user_error(pipeline_root)
        if user_error:
            raise UserError(user_error)
        raise StageFailed(
            f"pipeline run {run_id}: {strip_ansi(str(error))} (the end of the task's log is "
            f"above; all of it in {logs}/)"
        )
    return summary


TRACKING_STATUS_FILE = "tracking.jsonl"  # what tracking failed at, one line per failure


def with_embedded_tracking(configs: dict[str, dict[str, Any]], output: Path, spool: Path) -> dict:
    """Without tracking.uri or $MLFLOW_TRACKING_URI, runs go to an embedded MLflow store
    (SQLite) under the output folder, so every `visionpipe run` leaves history to browse.
    Its stage tasks spool their tracking calls to `spool` and this process replays them
    at the end (tracking_summary): one MLflow import and store opening instead of one per
    task, about 20 s of a run (docs/benchmarks.md). Nobody watches an embedded store live;
    a server given by tracking.uri or the variable is logged to by each task as it runs."""
    tracking = dict(configs.get("tracking") or {})
    if not tracking.get("uri") and not os.environ.get("MLFLOW_TRACKING_URI"):
        output.mkdir(parents=True, exist_ok=True)
        tracking["uri"] = f"sqlite:///{output / 'mlflow.db'}"
        tracking["spool"] = str(spool)
    return {**configs, "tracking": tracking}


def tracking_summary(decision: dict, status_file: Path, error) -> dict[str, Any]:
    """summary.json's `tracking`: where the run went, its MLflow run id, and every failure
    (`decision`: the changes task's, which names the pipeline's MLflow run)."""
    from components.infra import tracking

    decision = tracking.replay(decision)  # the stage tasks' spooled calls, if any
    found = dict(decision.get("tracking") or {})
    if error is not None:  # a stage failed: the pipeline's run is closed as FAILED here
        tracking.close_pipeline_run(decision, "run", status="FAILED")
    failures = []
    if status_file.is_file():
        failures = [json.loads(line) for line in status_file.read_text().splitlines() if line]
    if found.get("failed"):
        failures.insert(0, {"stage": "changes", "failed": found["failed"]})
    return {
        "uri": found.get("uri"),
        "run_id": found.get("run_id"),
        "experiment_id": found.get("experiment_id"),
        "off": found.get("off"),
        "failed": [f"{f.get('stage')}: {f.get('failed')}" for f in failures],
    }


def stage_local_data(data: str, pipeline_root: Path) -> str:
    """Containers see only the pipeline root: copy a local source folder (or a manifest's
    folder) under it. builtin: and gs:// sources pass through."""
    import shutil

    source = Path(data)
    if "://" in data or data.startswith("builtin:") or not source.exists():
        return data
    folder = source if source.is_dir() else source.parent
    target = pipeline_root / "input-data"
    progress.log("run", f"copying {folder} to {target}: containers see only the pipeline root")
    shutil.copytree(folder, target, dirs_exist_ok=True)
    return str(target if source.is_dir() else target / source.name)


def find_user_error(pipeline_root: Path) -> str | None:
    for path in sorted(pipeline_root.rglob(USER_ERROR_FILE)):
        return path.read_text().strip()
    return None


def task_outputs(pipeline_root: Path) -> dict[str, Path]:
    """Map link names to the output folders kfp.local wrote (absent when a task did not run)."""
    runs = sorted(p for p in pipeline_root.iterdir() if p.is_dir())
    found: dict[str, Path] = {}
    if not runs:
        return found
    for name, (task, output) in TASK_OUTPUTS.items():
        folder = runs[-1] / task / output
        if (folder / "config.json").exists():
            found[name] = folder
    return found


def task_parameters(run: Path, task: str) -> dict[str, Any]:
    """The parameter outputs a task wrote (executor_output.json), {} when it did not run."""
    found = run / task / "executor_output.json"
    return read_json(found).get("parameterValues", {}) if found.is_file() else {}


def validation_record(outputs: dict[str, Path]) -> dict[str, Any] | None:
    """The validate stage's decision and anomalies, for the summary."""
    if "validation" not in outputs:
        return None
    found = read_json(outputs["validation"] / "anomalies.json")
    return {
        "decision": found.get("decision"),
        "reference": found.get("reference_label"),
        "anomalies": found.get("anomalies", []),
        "accepted": found.get("accepted", []),
        "skipped": found.get("skipped", []),  # checks that could not run: never "passed"
        "on_skipped": found.get("on_skipped"),
        "note": found.get("note"),
    }


def summarize(
    run_id: str,
    run_dir: Path,
    pipeline_root: Path,
    data: str,
    wall_s: float,
    error: BaseException | None,
) -> dict[str, Any]:
    outputs = task_outputs(pipeline_root)
    for name, folder in outputs.items():
        link = run_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(folder, run_dir))
    timings = {
        TASK_OUTPUTS[name][0]: read_json(folder / "config.json")["elapsed_s"]
        for name, folder in outputs.items()
    }
    metrics, blessing = {}, {}
    if "evaluation" in outputs:
        metrics = read_json(outputs["evaluation"] / "metrics.json")
        blessing = read_json(outputs["evaluation"] / "blessing.json")

    def artifact(name: str, relative: str) -> str | None:
        return str(run_dir / name / relative) if name in outputs else None

    last_run = (sorted(p for p in pipeline_root.iterdir() if p.is_dir()) or [Path("-")])[-1]
    published_file = last_run / PUSH_OUTPUT[0] / PUSH_OUTPUT[1]
    fingerprint = task_parameters(last_run, "fingerprint").get("Output")
    published = read_json(published_file) if published_file.is_file() else {}
    changes_file = last_run / "changes" / "decision"
    changes = read_json(changes_file) if changes_file.is_file() else {}
    validation = validation_record(outputs)
    if "elapsed_s" in published:
        timings["push"] = published["elapsed_s"]
    status = "failed" if error is not None else "succeeded"
    return {
        "run_id": run_id,
        "status": status,
        "data": data,
        "fingerprint": fingerprint,  # what prepare's cache is keyed on (the data as it was)
        "test_accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "blessed": blessing.get("blessed"),
        "blessing_reasons": blessing.get("reasons"),
        # nothing new, nothing spent (pipelines/runkey.py): the decision and why
        "changed": changes.get("changed"),
        "decision": changes.get("message"),
        "refused_by": changes.get("refused_by"),  # the night that refused this key before
        "deployed_reference": changes.get("reference") or None,
        "validation": validation,
        "tracking": tracking_summary(changes, run_dir / TRACKING_STATUS_FILE, error),
        "artifacts": {
            "report": artifact("evaluation", "report.html"),
            "data_report": artifact("dataset", "report.html"),
            "validation": artifact("validation", "anomalies.json"),
            "model": artifact("model", "model.keras"),
            "tflite": artifact("export", "model.tflite"),
            "onnx": artifact("export", "model.onnx"),
            "saved_model": artifact("export", "saved_model"),
            "parity": artifact("export", "parity.json"),
            "model_card": artifact("export", "model_card.md"),
            "published": published.get("uri"),
        },
        "timings_s": {**timings, "total": round(wall_s, 2)},
        "error": None if error is None else " ".join(strip_ansi(str(error)).split())[:500],
        "python": sys.executable,
    }
