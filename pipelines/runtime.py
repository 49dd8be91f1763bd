"""What a component body needs around the stage call, and nothing about ML.

A stage that refuses its input raises `UserError`; inside a pipeline task the
message is also written beside the task's outputs (`user_error.txt`), so that
`visionpipe run` can report it as one line with exit code 2 instead of a
generic task failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

USER_ERROR_FILE = "user_error.txt"


@contextlib.contextmanager
def reporting_user_errors(output_path: str | None) -> Iterator[None]:
    """Write a UserError's message beside `output_path` (a task with no output artifact
    passes None: its message is in the task's log only), then re-raise it."""
    from components.infra.cli import limit_blas_threads, skip_final_collection
    from components.infra.errors import UserError

    skip_final_collection()  # every task enters this once; its process ends soon after
    limit_blas_threads()
    try:
        yield
    except (UserError, FileNotFoundError) as error:
        if output_path is None:
            raise
        task_dir = os.path.dirname(output_path.rstrip("/"))
        if task_dir and not task_dir.startswith("/gcs/") and os.path.isdir(task_dir):
            with open(os.path.join(task_dir, USER_ERROR_FILE), "w") as handle:
                handle.write(" ".join(str(error).split()) + "\n")
        raise


def read_decision(path: str) -> dict:
    """The changes task's decision.json (tracking run, registry, provenance)."""
    import json

    with open(path) as handle:
        return json.load(handle)


def track(decision: dict, stage: str, make_log) -> None:
    """Log this stage as a nested MLflow run under the pipeline's run
    (components/infra/tracking.py). MLflow or the network failing never breaks the run
    (said once there); a bug in what is logged (make_log, log_stage) is raised."""
    from components.infra import tracking

    tracking.log_stage(decision, stage, make_log())


def record_night(decision: dict, stage: str, dataset: str, outcome: dict) -> None:
    """One line in the registry's history.jsonl (components/infra/registry.py) for a
    night that was published or refused, and the verdict on the pipeline's MLflow run."""
    import json
    import time

    from components.infra import progress, registry, tracking

    base = decision.get("registry") or ""
    stats_path = os.path.join(dataset, "stats.json")
    counts = {}
    if os.path.isfile(stats_path):
        with open(stats_path) as handle:
            counts = json.load(handle).get("counts", {})
    entry = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "decided_by": stage,
        "fingerprint": (decision.get("provenance") or {}).get("fingerprint"),
        "data_total": counts.get("total"),
        "data_per_split": counts.get("per_split"),
        "mlflow_run_id": (decision.get("tracking") or {}).get("run_id"),
        "kfp_run_id": decision.get("kfp_run_id") or None,
        "run_id": os.environ.get("VISIONPIPE_RUN_ID") or None,  # visionpipe run's folder
        # what a refused night is remembered by (pipelines/runkey.py: refused_before)
        "key": (decision.get("provenance") or {}).get("key"),
        "against": decision.get("version"),
        **outcome,
    }
    if base:
        try:
            registry.append_history(base, entry)
        except Exception as error:  # noqa: BLE001  (the night's outcome stands regardless)
            progress.log(stage, f"warning: history not recorded in {base}: {error}")
    verdict = "published" if outcome.get("version") else "refused"
    reasons = "; ".join(outcome.get("reasons") or []) or "none"
    tracking.tag_pipeline_run(decision, stage, {"outcome": verdict, "outcome.reasons": reasons})
    tracking.close_pipeline_run(decision, stage)
