"""KFP components: each maps artifact paths to one stage's `run` and publishes its metrics.

The bodies are serialised into the compiled pipeline and executed in the
stage image (or, locally, in this Python environment), so they import
everything they use. No ML logic lives here.

The functions are plain; `build(images)` makes KFP components of them with the
images of one compile (`pipelines/images.py` resolves them), so the images CI
pushed reach every compiled pipeline, whenever and wherever it is compiled.
"""

from types import SimpleNamespace

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from pipelines.images import StageImages


def fingerprint(data: str) -> str:
    """What the data source holds now, as a short digest (never cached).

    Args:
        data: the pipeline's data source.

    Returns:
        The digest prepare is keyed on: the same listing gives the same value; an added,
        removed or rewritten file gives a new one (components/vision/fingerprint.py).
    """
    from components.vision.fingerprint import fingerprint as digest
    from pipelines.runtime import reporting_user_errors

    with reporting_user_errors(None):
        value = digest(data)
    print(f"[fingerprint] {data}: {value}", flush=True)
    return value


def changes(
    data_fingerprint: str,
    prepare_config: dict,
    validate_config: dict,
    train_config: dict,
    evaluate_config: dict,
    export_config: dict,
    push_config: dict,
    tracking_config: dict,
    kfp_run_id: str,
    decision: Output[Artifact],
) -> str:
    """Whether anything changed since the deployed version (never cached).

    Args:
        data_fingerprint: the fingerprint task's digest of the data.
        prepare_config: prepare config.
        validate_config: validate config (reference, skip_unchanged).
        train_config: train config.
        evaluate_config: evaluate config (baseline_model).
        export_config: export config.
        push_config: push config (registry, model_name).
        tracking_config: tracking config (MLflow URI, experiment, registered model); the
            pipeline's MLflow run is opened here (components/infra/tracking.py).
        kfp_run_id: this run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER), tagged on that run.
        decision: decision.json: changed, the one-line message, the deployed version's
            reference (validate compares with it) and tonight's provenance (push
            publishes it), pipelines/runkey.py.

    Returns:
        "changed" (the rest of the DAG runs) or "unchanged" (nothing trained or published).
    """
    import json

    from components.infra import tracking
    from pipelines.runkey import decide
    from pipelines.runtime import reporting_user_errors

    configs = {
        "prepare": prepare_config,
        "validate": validate_config,
        "train": train_config,
        "evaluate": evaluate_config,
        "export": export_config,
        "push": push_config,
    }
    with reporting_user_errors(decision.path):
        found = decide(data_fingerprint, configs)
        settings = tracking.TrackingConfig.from_dict(tracking_config)
    print(f"[changes] {found['message']}", flush=True)
    found["kfp_run_id"] = kfp_run_id if "{{" not in kfp_run_id else ""
    found["tracking"] = tracking.open_pipeline_run(
        settings, data_fingerprint, push_config, found["kfp_run_id"]
    )
    if not found["changed"]:
        tracking.tag_pipeline_run(found, "changes", {"outcome": "unchanged", "changed": "false"})
        tracking.close_pipeline_run(found, "changes")
    with open(decision.path, "w") as handle:
        json.dump(found, handle, indent=2, sort_keys=True)
    decision.metadata.update({"changed": found["changed"], "message": found["message"]})
    return "changed" if found["changed"] else "unchanged"


def prepare(
    data: str,
    config: dict,
    fingerprint: str,
    dataset: Output[Dataset],
    data_metrics: Output[Metrics],
    data_report: Output[HTML],
    data_report_md: Output[Markdown],
):
    """Validate, de-duplicate, split and shard a labelled image source.

    Args:
        data: folder of class sub-folders, gs:// prefix, or builtin:digits.
        config: prepare config (see components/prepare/config.py); {} for defaults.
        fingerprint: the fingerprint task's digest of `data`. Not read here: it is part of
            prepare's cache key, so changed data runs prepare again and unchanged data
            reuses the cached dataset.
        dataset: the prepared dataset folder (classes.json, splits/, tfrecords/, stats.json).
        data_metrics: image counts per split, rejected and duplicate counts.
        data_report: the HTML data report.
        data_report_md: the Markdown data report (rendered by the KFP UI).
    """
    import shutil

    from components.prepare.config import PrepareConfig
    from components.prepare.core import run
    from pipelines.runtime import reporting_user_errors

    with reporting_user_errors(dataset.path):
        stats = run(PrepareConfig.from_dict(config), data, dataset.path)
    for split, count in stats["counts"]["per_split"].items():
        data_metrics.log_metric(f"{split}_images", count)
    data_metrics.log_metric("rejected_files", stats["counts"]["rejected"])
    data_metrics.log_metric("duplicate_groups", len(stats["duplicate_groups"]))
    data_metrics.log_metric("imbalance_ratio", stats["imbalance_ratio"])
    shutil.copyfile(f"{dataset.path}/report.html", data_report.path)
    shutil.copyfile(f"{dataset.path}/report.md", data_report_md.path)


def prepare_scan(
    data: str, config: dict, fingerprint: str, shard: int, shards: int, scan: Output[Artifact]
):
    """Fan-out step 1 (prepare.parallelism > 1): inspect every `shards`-th listed file.

    Args:
        data: the pipeline's data source.
        config: prepare config.
        fingerprint: the fingerprint task's digest (the cache key, as for prepare).
        shard: this task's number, 0..shards-1.
        shards: prepare.parallelism.
        scan: the inspected records (inspected.jsonl).
    """
    from components.prepare.config import PrepareConfig
    from components.prepare.fanout import scan as run
    from pipelines.runtime import reporting_user_errors

    with reporting_user_errors(scan.path):
        run(PrepareConfig.from_dict(config), data, shard, shards, scan.path)


def prepare_plan(data: str, config: dict, scans: Input[list[Artifact]], plan: Output[Artifact]):
    """Fan-out step 2: the global decisions (duplicates, groups, the stratified split) on
    every scan's metadata; the dataset folder without its shards, and the shard list.

    Args:
        data: the pipeline's data source.
        config: prepare config.
        scans: every prepare_scan output.
        plan: the planned dataset folder and encode_jobs.json.
    """
    from components.prepare.config import PrepareConfig
    from components.prepare.fanout import plan as run
    from pipelines.runtime import reporting_user_errors

    with reporting_user_errors(plan.path):
        run(PrepareConfig.from_dict(config), data, [s.path for s in scans], plan.path)


def prepare_encode(
    config: dict, plan: Input[Artifact], worker: int, workers: int, records: Output[Artifact]
):
    """Fan-out step 3: encode every `workers`-th shard of the plan as TFRecords.

    Args:
        config: prepare config.
        plan: prepare_plan's output.
        worker: this task's number, 0..workers-1.
        workers: prepare.parallelism.
        records: the encoded shards (tfrecords/).
    """
    from components.prepare.config import PrepareConfig
    from components.prepare.fanout import encode as run
    from pipelines.runtime import reporting_user_errors

    with reporting_user_errors(records.path):
        run(PrepareConfig.from_dict(config), plan.path, worker, workers, records.path)


def prepare_merge(
    data: str,
    config: dict,
    plan: Input[Artifact],
    encoded: Input[list[Artifact]],
    dataset: Output[Dataset],
    data_metrics: Output[Metrics],
    data_report: Output[HTML],
    data_report_md: Output[Markdown],
):
    """Fan-out step 4: the plan's folder and every encoded shard, as one dataset (what
    single-task prepare writes).

    Args:
        data: the pipeline's data source.
        config: prepare config.
        plan: prepare_plan's output.
        encoded: every prepare_encode output.
        dataset: the prepared dataset folder.
        data_metrics: image counts per split, rejected and duplicate counts.
        data_report: the HTML data report.
        data_report_md: the Markdown data report.
    """
    import shutil

    from components.prepare.config import PrepareConfig
    from components.prepare.fanout import merge
    from pipelines.runtime import reporting_user_errors

    with reporting_user_errors(dataset.path):
        stats = merge(
            PrepareConfig.from_dict(config),
            data,
            plan.path,
            [e.path for e in encoded],
            dataset.path,
        )
    for split, count in stats["counts"]["per_split"].items():
        data_metrics.log_metric(f"{split}_images", count)
    data_metrics.log_metric("rejected_files", stats["counts"]["rejected"])
    data_metrics.log_metric("duplicate_groups", len(stats["duplicate_groups"]))
    shutil.copyfile(f"{dataset.path}/report.html", data_report.path)
    shutil.copyfile(f"{dataset.path}/report.md", data_report_md.path)


def validate(
    dataset: Input[Dataset],
    config: dict,
    changes: Input[Artifact],
    validation: Output[Artifact],
    validation_metrics: Output[Metrics],
    validation_report: Output[HTML],
    validation_report_md: Output[Markdown],
):
    """Check the prepared dataset against the deployed version; stop the run on anomalies
    (validate.on_anomaly=stop), before anything is trained.

    Args:
        dataset: output of prepare.
        config: validate config (see components/validate/config.py); {} for defaults.
        changes: the changes task's decision (the deployed version's reference).
        validation: folder with anomalies.json, report.md/.html, config.json.
        validation_metrics: new, known and relabelled image counts; anomalies.
        validation_report: the HTML validation report.
        validation_report_md: the Markdown validation report (rendered by the KFP UI).
    """
    import os
    import shutil
    from pathlib import Path

    from components.infra.errors import UserError
    from components.infra.tracking_stages import validate_log
    from components.validate.config import ValidateConfig
    from components.validate.core import run
    from pipelines.runtime import read_decision, record_night, reporting_user_errors, track

    decision = read_decision(changes.path)
    reference = decision.get("reference") or ""

    def logged():  # what MLflow gets, whether the night passed or was stopped
        return validate_log(config, Path(validation.path), Path(dataset.path))

    try:
        with reporting_user_errors(validation.path):
            try:
                result = run(
                    ValidateConfig.from_dict(config), dataset.path, validation.path, reference
                )
            except UserError as error:  # stopped on anomalies: a refused night, recorded
                track(decision, "validate", logged)
                record_night(
                    decision, "validate", dataset.path, {"blessed": False, "reasons": [str(error)]}
                )
                raise
    finally:  # a stopped run still shows its report in the UI
        for name, target in (
            ("report.html", validation_report),
            ("report.md", validation_report_md),
        ):
            if os.path.isfile(f"{validation.path}/{name}"):
                shutil.copyfile(f"{validation.path}/{name}", target.path)
    for name, value in result.get("counts", {}).items():
        validation_metrics.log_metric(f"{name}_images", value)
    validation_metrics.log_metric("anomalies", len(result["anomalies"]))
    validation_metrics.log_metric("accepted_anomalies", len(result["accepted"]))
    track(decision, "validate", logged)


def train(
    dataset: Input[Dataset],
    config: dict,
    changes: Input[Artifact],
    model: Output[Model],
    val_metrics: Output[Metrics],
):
    """Train a classifier on the prepared dataset; keep the best epoch.

    Args:
        dataset: output of prepare.
        config: train config (see components/train/config.py); {} for defaults.
        changes: the changes task's decision (the pipeline's MLflow run).
        model: model folder (model.keras, history.csv, metrics.json, tensorboard/, config.json).
        val_metrics: validation metrics of the kept epoch.
    """
    from pathlib import Path

    from components.infra.tracking_stages import train_log
    from components.train.config import TrainConfig
    from components.train.core import run
    from pipelines.runtime import read_decision, reporting_user_errors, track

    # a retried or preempted task gets a fresh pod and disk but the same output URI: the
    # backup state kept beside it (gs://) lets the new pod resume where the old one stopped
    with reporting_user_errors(model.path):
        metrics = run(TrainConfig.from_dict(config), dataset.path, model.path, state_uri=model.uri)
    for name, value in metrics.items():
        val_metrics.log_metric(name, value)
    track(read_decision(changes.path), "train", lambda: train_log(config, Path(model.path)))


def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    config: dict,
    changes: Input[Artifact],
    evaluation: Output[Artifact],
    test_metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    eval_report: Output[HTML],
    eval_report_md: Output[Markdown],
) -> bool:
    """Measure the model on the test split and decide whether it is blessed.

    Args:
        dataset: output of prepare.
        model: output of train.
        config: evaluate config (see components/evaluate/config.py); {} for defaults.
        changes: the changes task's decision (the MLflow run; the registry's history,
            where a refused night is recorded).
        evaluation: folder with metrics.json, confusion_matrix.csv/.png, errors.csv,
            report.html, blessing.json.
        test_metrics: headline test metrics.
        confusion: the confusion matrix, rendered by the KFP UI.
        eval_report: the HTML evaluation report.
        eval_report_md: the Markdown evaluation report.

    Returns:
        True when the model is blessed (export and push run only then).
    """
    import shutil
    from pathlib import Path

    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run
    from components.infra.tracking_stages import evaluate_log
    from pipelines.runtime import read_decision, record_night, reporting_user_errors, track

    with reporting_user_errors(evaluation.path):
        result = run(EvaluateConfig.from_dict(config), dataset.path, model.path, evaluation.path)
    metrics = result["metrics"]
    for name in ("accuracy", "macro_f1", "weighted_f1", "log_loss", "ece", "worst_class_recall"):
        test_metrics.log_metric(name, metrics[name])
    confusion.log_confusion_matrix(result["classes"], result["confusion_matrix"])
    shutil.copyfile(f"{evaluation.path}/report.html", eval_report.path)
    shutil.copyfile(f"{evaluation.path}/report.md", eval_report_md.path)
    decision = read_decision(changes.path)
    track(decision, "evaluate", lambda: evaluate_log(config, Path(evaluation.path)))
    blessing = result["blessing"]
    if not blessing["blessed"]:  # a refused night: recorded beside latest.json, with why
        outcome = {
            "blessed": False,
            "reasons": blessing.get("reasons") or [],
            "test_accuracy": metrics.get("accuracy"),
            "macro_f1": metrics.get("macro_f1"),
        }
        record_night(decision, "evaluate", dataset.path, outcome)
    return bool(blessing["blessed"])


def export(
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    config: dict,
    changes: Input[Artifact],
    exported: Output[Model],
    parity_metrics: Output[Metrics],
):
    """Write SavedModel, TFLite and ONNX files and prove each matches Keras.

    Args:
        dataset: output of prepare (the test split is the parity set).
        model: output of train.
        evaluation: output of evaluate (the model card's test metrics).
        config: export config (see components/export/config.py); {} for defaults.
        changes: the changes task's decision (the pipeline's MLflow run).
        exported: folder with saved_model/, model.tflite, model.onnx, labels.txt,
            parity.json, benchmark.json, model_card.md.
        parity_metrics: top-1 agreement with Keras per format.
    """
    from pathlib import Path

    from components.export.config import ExportConfig
    from components.export.core import run
    from components.infra.tracking_stages import export_log
    from pipelines.runtime import read_decision, reporting_user_errors, track

    # a failed verification keeps its evidence (parity.json, the failing files) beside the
    # output URI, since a failed task's own outputs are never uploaded
    with reporting_user_errors(exported.path):
        result = run(
            ExportConfig.from_dict(config),
            dataset.path,
            model.path,
            exported.path,
            evaluation=evaluation.path,
            evidence_uri=exported.uri + ".failed",
        )
    for name, values in result["parity"].items():
        if "top1_agreement" in values:
            parity_metrics.log_metric(f"{name}_top1_agreement", values["top1_agreement"])
    track(read_decision(changes.path), "export", lambda: export_log(config, Path(exported.path)))


def push(
    exported: Input[Model],
    evaluation: Input[Artifact],
    model: Input[Model],
    dataset: Input[Dataset],
    config: dict,
    changes: Input[Artifact],
    published: Output[Artifact],
):
    """Publish the verified export to the registry (folder or gs://) with a manifest.

    Args:
        exported: output of export (every file is copied).
        evaluation: output of evaluate (its blessing is checked again; its metrics are
            published for the next run's gate).
        model: output of train (model.keras, published so a later run can re-measure it).
        dataset: output of prepare (its split manifests, with each image's sha256, are
            published for prepare.keep_splits and the baseline comparison).
        config: push config (registry, model_name, version); an empty registry publishes nothing.
        changes: the changes task's decision: tonight's provenance (data fingerprint,
            resolved configs, key), published so the next night can tell it changed nothing.
        published: `latest.json` content of the registry after the push (uri, version).
    """
    import json

    from components.infra import tracking
    from components.infra.tracking_stages import push_log
    from components.push.config import PushConfig
    from components.push.core import run
    from pipelines.runtime import read_decision, record_night, reporting_user_errors, track

    decision = read_decision(changes.path)
    provenance = decision.get("provenance")
    with reporting_user_errors(published.path):
        result = run(
            PushConfig.from_dict(config),
            exported.path,
            evaluation.path,
            model=model.path,
            dataset=dataset.path,
            provenance=provenance,
        )
    published.metadata.update({k: v for k, v in result.items() if isinstance(v, str | bool | int)})
    with open(published.path, "w") as handle:
        json.dump(result, handle, indent=2)
    track(decision, "push", lambda: push_log(PushConfig.from_dict(config).to_dict(), result, None))
    tracking.register_version(decision, result, metrics_path=f"{evaluation.path}/metrics.json")
    if result.get("pushed"):
        with open(f"{evaluation.path}/metrics.json") as handle:
            metrics = json.load(handle)
        outcome = {
            "blessed": True,
            "reasons": [],
            "version": result["version"],
            "uri": result["uri"],
            "test_accuracy": metrics.get("accuracy"),
            "macro_f1": metrics.get("macro_f1"),
            "latest_moved": result.get("latest_moved"),
        }
        record_night(decision, "push", dataset.path, outcome)


STAGE_FUNCTIONS = (fingerprint, changes, prepare, validate, train, evaluate, export, push)
# prepare.parallelism > 1: prepare as a fan-out over pods (components/prepare/fanout.py)
FANOUT_FUNCTIONS = (prepare_scan, prepare_plan, prepare_encode, prepare_merge)


def build(
    images: StageImages, gpu_count: int, gpu_tasks: tuple[str, ...] = ("train",)
) -> SimpleNamespace:
    """KFP components of the functions above, in the images of this compile."""
    return SimpleNamespace(
        **{
            function.__name__: dsl.component(
                function,
                base_image=images.for_task(function.__name__, gpu_count, gpu_tasks),
                install_kfp_package=False,
            )
            for function in (*STAGE_FUNCTIONS, *FANOUT_FUNCTIONS)
        }
    )
