"""The `visionpipe` command: run the pipeline, run one stage, compile, predict.

  visionpipe run       [--data SRC] [--config FILE] [--set stage.key=value ...] [--runner R] [--output DIR]
  visionpipe prepare   --data SRC --output DIR                 [--config FILE] [--set key=value ...]
  visionpipe train     --dataset DIR --output DIR              [--config FILE] [--set key=value ...]
  visionpipe evaluate  --dataset DIR --model DIR --output DIR  [--config FILE] [--set key=value ...]
  visionpipe export    --dataset DIR --model DIR --output DIR  [--config FILE] [--set key=value ...]
  visionpipe compile   [--output FILE]
  visionpipe predict   --model FILE IMAGE... [--top-k K] [--json]

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.common.cli import add_config_arguments, quiet_tensorflow
from components.common.config import SECTIONS, load_config_file, parse_overrides, split_sections
from components.common.errors import UserError, exit_on_user_error
from components.evaluate import cli as evaluate_cli
from components.export import cli as export_cli
from components.export import push_cli
from components.prepare import cli as prepare_cli
from components.train import cli as train_cli

STAGE_CLIS = {
    "prepare": prepare_cli,
    "train": train_cli,
    "evaluate": evaluate_cli,
    "export": export_cli,
    "push": push_cli,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionpipe", description="Labelled images in; a verified image classifier out."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        "--preset",
        choices=sorted(presets()),
        help="a named whole-run config applied before --config and --set",
    )
    add_config_arguments(run)

    for name, module in STAGE_CLIS.items():
        sub = commands.add_parser(name, help=module.DESCRIPTION.rstrip(".").lower())
        module.add_arguments(sub)

    compile_ = commands.add_parser("compile", help="write the Kubeflow pipeline YAML")
    compile_.add_argument("--output", default="build/visionpipe.yaml", help="YAML file to write")

    predict = commands.add_parser("predict", help="classify image files with an exported model")
    predict.add_argument(
        "--model",
        required=True,
        help="model.tflite, model.onnx, model.keras or a saved_model folder",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


PRESETS_DIR = Path(__file__).parent / "presets"


def presets() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PRESETS_DIR.glob("*.yaml"))}


def run_configs(
    config_file: str | None, overrides: list[str], preset: str | None = None
) -> dict[str, dict]:
    """Whole-run config: preset, then file sections, then `--set stage.key=value`; validated."""
    from components.evaluate.config import EvaluateConfig
    from components.export.config import ExportConfig, PushConfig
    from components.prepare.config import PrepareConfig
    from components.train.config import TrainConfig

    merged = split_sections(load_config_file(presets()[preset]) if preset else {})
    for section, values in split_sections(load_config_file(config_file)).items():
        merged[section].update(values)
    for section, values in split_sections(parse_overrides(overrides)).items():
        merged[section].update(values)
    classes = dict(
        zip(
            SECTIONS,
            (PrepareConfig, TrainConfig, EvaluateConfig, ExportConfig, PushConfig),
            strict=True,
        )
    )
    # validate here, so a typo fails in a second, not after training
    return {
        name: classes[name].from_dict(values).to_dict() if values else {}
        for name, values in merged.items()
    }


def command_run(args: argparse.Namespace) -> int:
    from components.prepare.scan import list_source
    from pipelines.local_run import run_pipeline

    configs = run_configs(args.config, args.set, args.preset)
    if "registry" not in configs["push"]:  # locally, publish beside the runs by default
        configs["push"] = {
            **configs["push"],
            "registry": str(Path(args.output).resolve() / "registry"),
        }
    list_source(args.data)  # a wrong path or a folder without classes fails here, in a second
    summary = run_pipeline(args.data, configs, args.output, args.runner, args.run_id)
    artifacts = summary["artifacts"]
    print(f"\nrun {summary['run_id']} {summary['status']} in {summary['timings_s']['total']:.0f} s")
    print(
        f"  test accuracy {summary['test_accuracy']:.4f}, macro F1 {summary['macro_f1']:.4f}, "
        f"blessed: {summary['blessed']}"
    )
    if not summary["blessed"]:
        print("  not exported: " + "; ".join(summary["blessing_reasons"] or []))
    for label, key in (
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
    return 0


def command_predict(args: argparse.Namespace) -> int:
    from components.export.predict import predict_files

    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    results = predict_files(args.model, args.images, args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for item in results:
            tops = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in item["top"])
            print(f"{item['image']}: {tops}")
    return 0


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    if args.command == "run":
        return command_run(args)
    if args.command in STAGE_CLIS:
        return STAGE_CLIS[args.command].execute(args)
    if args.command == "compile":
        from pipelines.pipeline import compile_pipeline

        print(compile_pipeline(args.output))
        return 0
    if args.command == "predict":
        return command_predict(args)
    raise UserError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
