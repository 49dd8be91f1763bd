"""The `visionpipe` command: run the pipeline, run one stage, compile, predict.

  visionpipe run       [--data SRC] [--config FILE] [--set stage.key=value ...] [--runner R] [--output DIR]
  visionpipe prepare   --data SRC --output DIR                 [--config FILE] [--set key=value ...]
  visionpipe train     --dataset DIR --output DIR              [--config FILE] [--set key=value ...]
  visionpipe evaluate  --dataset DIR --model DIR --output DIR  [--config FILE] [--set key=value ...]
  visionpipe export    --dataset DIR --model DIR --output DIR  [--config FILE] [--set key=value ...]
  visionpipe compile   [--output FILE] [--cluster FILE] [--scheduled]
  visionpipe submit    --host URL [--experiment E] [--data SRC] [--config FILE] [--set ...] [--wait]
  visionpipe schedule  --host URL --cron "0 0 3 * * *" [--experiment E] [--data SRC] [--config FILE]
  visionpipe predict   --model FILE IMAGE... [--top-k K] [--json] [--meta NAME=VALUE ...] [--metadata FILE]
  visionpipe explain   --model DIR|FILE --output DIR IMAGE... [--layer NAME] [--meta ...] [--metadata FILE]
  visionpipe serve     REGISTRY/MODEL[/VERSION] | EXPORT_DIR [--host H] [--port P] [--log LOCATION]
  visionpipe collect   --log LOCATION [--model REGISTRY/MODEL] [--host H] [--port P]

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.infra.cli import (
    add_config_arguments,
    limit_blas_threads,
    quiet_tensorflow,
    skip_final_collection,
)
from components.infra.config import load_config_file, parse_overrides, split_sections
from components.infra.errors import UserError, exit_on_user_error
from pipelines.stages import STAGES, cli_module, config_class

STAGE_CLIS = {stage: cli_module(stage) for stage in STAGES}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionpipe", description="Labelled images in; a verified image classifier out."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_command(commands)
    for name, module in STAGE_CLIS.items():
        sub = commands.add_parser(name, help=module.DESCRIPTION.rstrip(".").lower())
        module.add_arguments(sub)
    add_tune_command(commands)
    add_compile_command(commands)
    add_cluster_commands(commands)
    add_predict_command(commands)
    add_explain_command(commands)
    add_history_command(commands)
    commands.add_parser(  # parsed by components/serve/cli.py, in the serving venv (see main)
        "serve", help="serve a published version over HTTP (KServe v1/v2; `serve --help`)"
    )
    commands.add_parser("collect", help="write prediction records from KServe's payload logger")
    return parser


def add_run_command(commands) -> None:
    run = commands.add_parser("run", help="run the whole pipeline locally (kfp.local)")
    run.add_argument(
        "--data",
        default="builtin:digits",
        help="folder of class sub-folders, gs:// prefix, or builtin:digits (default)",
    )
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="kfp.local runner: subprocess (this Python) or docker (the images)",
    )
    run.add_argument("--output", default="runs", help="folder for run folders (default: runs)")
    run.add_argument("--run-id", help="name of the run folder (default: time + random suffix)")
    run.add_argument(
        "--verbose",
        action="store_true",
        help="stream every task's full output (it always goes to <run>/logs/)",
    )
    run.add_argument(
        "--preset",
        choices=sorted(presets()),
        help="a named whole-run config applied before --config and --set",
    )
    add_force_argument(run)
    add_first_night_argument(run)
    add_config_arguments(run)


def add_tune_command(commands) -> None:
    tune = commands.add_parser(
        "tune", help="search train settings (KerasTuner here; --katib: a Katib Experiment)"
    )
    tune.add_argument(
        "--data",
        default="builtin:digits",
        help="what `run` takes: folder, gs:// prefix, manifest or builtin:digits",
    )
    tune.add_argument("--output", required=True, help="folder (local search) or file (--katib)")
    tune.add_argument("--trials", type=int, help="trials at most (tune.trials)")
    tune.add_argument("--max-epochs", type=int, help="epochs per trial at most (tune.max_epochs)")
    tune.add_argument(
        "--algorithm", choices=("bayesian", "hyperband", "random"), help="tune.algorithm"
    )
    tune.add_argument(
        "--katib", action="store_true", help="write a Katib Experiment to --output instead"
    )
    tune.add_argument(
        "--dataset",
        help="--katib: the prepared dataset the trials train on (a gs:// prepare output)",
    )
    tune.add_argument(
        "--preset",
        choices=sorted(presets()),
        help="a named whole-run config applied before --config and --set",
    )
    add_cluster_arguments(tune)
    add_config_arguments(tune)


def add_compile_command(commands) -> None:
    compile_ = commands.add_parser("compile", help="write the Kubeflow pipeline YAML")
    compile_.add_argument("--output", default="build/visionpipe.yaml", help="YAML file to write")
    add_cluster_arguments(compile_)
    compile_.add_argument(
        "--prepare-parallelism",
        type=int,
        default=1,
        help="prepare as a fan-out over this many pods (prepare.parallelism; submit and "
        "schedule read it from the config)",
    )
    compile_.add_argument(
        "--scheduled",
        action="store_true",
        help="accepted for older scripts: every compiled pipeline is fit for a schedule "
        "(its fingerprint task re-prepares exactly when the data changed)",
    )


def add_cluster_commands(commands) -> None:
    submit = commands.add_parser("submit", help="upload the pipeline and start a run on KFP")
    add_server_arguments(submit)
    add_first_night_argument(submit)
    submit.add_argument("--run-name", help="display name of the run")
    submit.add_argument("--wait", action="store_true", help="follow the run; exit 1 if it fails")
    submit.add_argument(
        "--timeout", type=int, default=24 * 3600, help="seconds --wait waits (default: a day)"
    )

    schedule = commands.add_parser("schedule", help="create a recurring run on KFP")
    add_server_arguments(schedule)
    schedule.add_argument(
        "--cron",
        required=True,
        help="KFP cron: 6 fields, seconds first (e.g. '0 0 3 * * *' = 03:00 daily)",
    )
    schedule.add_argument("--name", default="visionpipe retraining", help="recurring run name")
    schedule.add_argument(
        "--catchup", action="store_true", help="run the missed intervals after a pause"
    )


def add_predict_command(commands) -> None:
    predict = commands.add_parser("predict", help="classify image files with an exported model")
    predict.add_argument(
        "--model",
        required=True,
        help="model.tflite, model.onnx, model.keras or a saved_model folder",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_model_input_arguments(predict)


def add_model_input_arguments(parser) -> None:
    """What predict and explain take besides the images: metadata and the calibration."""
    parser.add_argument(
        "--meta",
        action="append",
        metavar="NAME=VALUE",
        help="a metadata column's value for every image (models trained with metadata_columns)",
    )
    parser.add_argument(
        "--metadata",
        metavar="FILE",
        help="CSV/JSONL with an image column and the model's metadata columns, a row per image",
    )
    parser.add_argument(
        "--calibration",
        metavar="PATH",
        help="a .keras model's calibration.json or evaluation folder (default: beside the "
        "model, or its run's evaluation folder)",
    )


def add_explain_command(commands) -> None:
    explain = commands.add_parser(
        "explain", help="Grad-CAM: where a trained model looks, per image (PNG maps and a CSV)"
    )
    explain.add_argument("--model", required=True, help="a train output folder or a .keras file")
    explain.add_argument("--output", required=True, help="folder for the maps and explain.csv")
    explain.add_argument("images", nargs="+", metavar="IMAGE")
    explain.add_argument(
        "--layer",
        default="",
        help="the feature map to explain, a layer name (a backbone's too: backbone/NAME); "
        "default: the last convolutional one of side >= 4",
    )
    add_model_input_arguments(explain)


def command_explain(args: argparse.Namespace) -> int:
    from components.explain.core import explain_files

    results = explain_files(
        args.model, args.images, args.output, args.layer, args.meta, args.metadata,
        args.calibration,
    )  # fmt: skip
    for item in results:
        print(
            f"{item['image']}: {item['predicted']} {item['probability']:.3f}, "
            f"peak at ({item['peak_x']}, {item['peak_y']})"
        )
    print(f"wrote {len(results)} maps and explain.csv to {args.output}")
    return 0


def add_history_command(commands) -> None:
    history = commands.add_parser(
        "history", help="every recorded night of a registry model: a table, an HTML page, a plot"
    )
    history.add_argument("reference", metavar="REGISTRY/MODEL", help="<registry>/<model_name>")
    history.add_argument(
        "--output", default="history", help="folder for history.html and history.png"
    )


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        metavar="FILE",
        help="YAML with a kubernetes: section (GPUs, node selectors, tolerations, pull "
        "secrets, service account, pipeline_root, retries); see docs/cluster.md",
    )


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="train and publish even when the data and settings equal the deployed "
        "version's (validate.skip_unchanged=false)",
    )


def add_first_night_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--first-night",
        action="store_true",
        help="nothing is published at the registry yet and that is expected: train, gate on "
        "the thresholds alone and publish the first version (validate.first_night=allow); "
        "without it a scheduled config (validate.first_night=refuse) stops before training",
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example")
    parser.add_argument("--experiment", default="visionpipe", help="experiment name")
    parser.add_argument("--namespace", help="Kubeflow profile namespace (multi-user)")
    parser.add_argument(
        "--data",
        default="builtin:digits",
        help="data source as the cluster sees it: gs://... or builtin:digits",
    )
    parser.add_argument(
        "--upload",
        action="store_true",
        help="copy a local --data folder or manifest to <pipeline_root>/data/<fingerprint>/ "
        "first (once per content) and run on that copy",
    )
    parser.add_argument("--preset", choices=sorted(presets()), help="a named whole-run config")
    add_force_argument(parser)
    add_config_arguments(parser)
    add_cluster_arguments(parser)
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--token", help="bearer token (default: $KF_PIPELINES_TOKEN)")
    auth.add_argument("--in-cluster", action="store_true", help="the pod's service-account token")
    auth.add_argument("--google", action="store_true", help="Google default credentials")


PRESETS_DIR = Path(__file__).parent / "presets"


def presets() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PRESETS_DIR.glob("*.yaml"))}


def section_class(name: str):
    if name == "tune":
        from pipelines.tune.config import TuneConfig

        return TuneConfig
    if name == "tracking":
        from components.infra.tracking import TrackingConfig

        return TrackingConfig
    return config_class(name)


def run_configs(
    config_file: str | None,
    overrides: list[str],
    preset: str | None = None,
    include_tune: bool = False,
) -> dict[str, dict]:
    """Whole-run config: preset, then file sections, then `--set stage.key=value`; validated.
    The `tune` section is validated always and returned only with `include_tune`."""
    merged = split_sections(load_config_file(presets()[preset]) if preset else {})
    for section, values in split_sections(load_config_file(config_file)).items():
        merged[section].update(values)
    for section, values in split_sections(parse_overrides(overrides)).items():
        merged[section].update(values)
    # validate here, so a typo fails in a second, not after training; pass on only what
    # was set (typed), and no nulls: a pipeline parameter cannot hold one, and every
    # optional key's default is null anyway
    validated = {
        name: section_class(name).from_dict(values).to_dict() if values else {}
        for name, values in merged.items()
    }
    return {
        name: {k: v for k, v in validated[name].items() if k in merged[name] and v is not None}
        for name in merged
        if include_tune or name != "tune"
    }


def command_run(args: argparse.Namespace) -> int:
    from components.vision.sources import list_source
    from pipelines.local_run import run_pipeline

    configs = run_configs(args.config, forced(args), args.preset)
    if "registry" not in configs["push"]:  # locally, publish beside the runs by default
        configs["push"] = {
            **configs["push"],
            "registry": str(Path(args.output).resolve() / "registry"),
        }
    list_source(args.data)  # a wrong path or a folder without classes fails here, in a second
    summary = run_pipeline(
        args.data, configs, args.output, args.runner, args.run_id, verbose=args.verbose
    )
    print_summary(summary, Path(args.output).resolve())
    return 0


def forced(args: argparse.Namespace) -> list[str]:
    """The --set overrides, with --force as validate.skip_unchanged=false and --first-night
    as validate.first_night=allow."""
    found = [*args.set, "validate.skip_unchanged=false"] if args.force else list(args.set)
    return found + (["validate.first_night=allow"] if getattr(args, "first_night", False) else [])


def print_summary(summary: dict, output: Path) -> None:
    """The run's closing lines: what happened, and where everything is."""
    artifacts = summary["artifacts"]
    print(f"\nrun {summary['run_id']} {summary['status']} in {summary['timings_s']['total']:.0f} s")
    if summary.get("changed") is False:
        print(f"  {summary['decision']}")
    elif summary["test_accuracy"] is not None:
        print(
            f"  test accuracy {summary['test_accuracy']:.4f}, macro F1 "
            f"{summary['macro_f1']:.4f}, blessed: {summary['blessed']}"
        )
        if not summary["blessed"]:
            print("  not exported: " + "; ".join(summary["blessing_reasons"] or []))
    validation = summary.get("validation") or {}
    for line in validation.get("accepted", []):
        print(f"  accepted (validate.accept): {line}")
    for line in validation.get("skipped") or []:
        print(f"  skipped check (validate.on_skipped={validation.get('on_skipped')}): {line}")
    if validation.get("decision") == "first_night":
        print(f"  {validation.get('note')}")
    print(f"  logs         {output / summary['run_id'] / 'logs'}")
    for label, key in (
        ("validation", "validation"),
        ("report", "report"),
        ("data report", "data_report"),
        ("tflite", "tflite"),
        ("onnx", "onnx"),
        ("saved model", "saved_model"),
        ("model card", "model_card"),
        ("published", "published"),
    ):
        if artifacts.get(key):
            print(f"  {label:12s} {artifacts[key]}")
    print_tracking(summary.get("tracking") or {})


def print_tracking(tracking: dict) -> None:
    """Where the run's MLflow history is and how to open it, or that tracking failed."""
    if tracking.get("failed"):
        print(f"  tracking     FAILED: {tracking['failed'][0]} (the run itself is unaffected)")
    elif tracking.get("off"):
        print(f"  tracking     off: {tracking['off']}")
    if tracking.get("run_id"):
        uri = tracking["uri"]
        print(f"  mlflow run   {tracking['run_id']} at {uri}")
        if uri.startswith("sqlite:"):
            print(f"  browse       mlflow ui --backend-store-uri {uri}")


def command_tune(args: argparse.Namespace) -> int:
    configs = run_configs(args.config, args.set, args.preset, include_tune=True)
    overrides = {
        key: value
        for key, value in (
            ("trials", args.trials),
            ("max_epochs", args.max_epochs),
            ("algorithm", args.algorithm),
        )
        if value is not None
    }
    if args.katib:
        from pipelines.cluster import load_cluster_settings
        from pipelines.katib import write_experiment

        settings = load_cluster_settings(args.cluster)
        path = write_experiment(args.output, configs, overrides, settings, args.dataset)
        print(f"Katib Experiment written to {path}: kubectl apply -n <namespace> -f {path}")
        return 0
    from components.vision.sources import list_source
    from pipelines.tune.config import TuneConfig
    from pipelines.tune.core import run as search

    tune = TuneConfig.from_dict({**configs.get("tune", {}), **overrides})
    list_source(args.data)  # a wrong path fails here, in a second
    summary = search(tune, args.data, configs, args.output)
    best = summary["best"]
    print(
        f"\nbest of {summary['trials']} trials: {summary['objective']} "
        f"{best[summary['objective']]:.4f} (trial {best['trial']})"
    )
    print(f"  config       {summary['best_config']}")
    print(f"  model        {summary['best_model']}")
    print(f"  trials       {Path(args.output).resolve() / 'trials.csv'}")
    return 0


def command_predict(args: argparse.Namespace) -> int:
    from components.predict.core import predict_files

    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    results = predict_files(
        args.model, args.images, args.top_k, args.meta, args.metadata, args.calibration
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for item in results:
            tops = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in item["top"])
            print(f"{item['image']}: {tops}")
    return 0


def command_submit(args: argparse.Namespace) -> int:
    from pipelines import submit as kfp_submit
    from pipelines.cluster import load_cluster_settings
    from pipelines.upload import cluster_data

    if args.command == "schedule":
        kfp_submit.validate_cron(args.cron)  # before anything else: a bad cron costs nothing
    settings = load_cluster_settings(args.cluster)
    from pipelines.runkey import with_registry

    configs = with_registry(run_configs(args.config, forced(args), args.preset))
    # before the server is contacted: a source the pods cannot read uploads nothing
    data = cluster_data(args.data, args.upload, settings.pipeline_root)
    params = kfp_submit.pipeline_params(configs, data)
    auth = kfp_submit.Auth(token=args.token, in_cluster=args.in_cluster, google=args.google)
    client = kfp_submit.make_client(args.host, auth, args.namespace)
    common = {
        "pipeline_root": settings.pipeline_root or None,
        "service_account": settings.service_account or None,
        "settings": settings,
    }
    if args.command == "schedule":
        created = kfp_submit.schedule(
            client, params, args.experiment, args.cron, args.name, catchup=args.catchup, **common
        )
        print(json.dumps(created, indent=2))
        return 0
    created = kfp_submit.submit(client, params, args.experiment, args.run_name, **common)
    print(json.dumps(created, indent=2))
    if args.wait:
        state = kfp_submit.wait(client, created["run_id"], args.timeout)
        print(f"run {created['run_id']} ended {state}")
        return 0 if state in kfp_submit.TERMINAL_OK else 1
    return 0


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["serve"], ["collect"]):  # own parsers and venv (kserve pins pandas<3)
        from components.serve.cli import launch

        return launch(argv[1:], argv[0])
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    skip_final_collection()
    limit_blas_threads()  # the stage tasks inherit it
    if args.command == "run":
        return command_run(args)
    if args.command in STAGE_CLIS:
        return STAGE_CLIS[args.command].execute(args)
    if args.command == "compile":
        from components.prepare.config import PrepareConfig
        from pipelines.cluster import load_cluster_settings
        from pipelines.pipeline import compile_pipeline

        settings = load_cluster_settings(args.cluster)
        parallelism = PrepareConfig(parallelism=args.prepare_parallelism)
        parallelism.validate()
        print(compile_pipeline(args.output, settings, parallelism.parallelism))
        return 0
    if args.command in ("submit", "schedule"):
        return command_submit(args)
    if args.command == "predict":
        return command_predict(args)
    if args.command == "explain":
        return command_explain(args)
    if args.command == "tune":
        return command_tune(args)
    if args.command == "history":
        from components.infra import storage
        from pipelines.history import history

        history(storage.check_location(args.reference, "history reference"), args.output)
        return 0
    raise UserError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
