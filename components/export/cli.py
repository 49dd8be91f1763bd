"""`visionpipe export` / `python -m components.export`."""

from __future__ import annotations

import argparse

from components.common.cli import add_config_arguments, stage_main
from components.common.config import stage_config

DESCRIPTION = "Export a trained model to SavedModel, TFLite and ONNX, verified against Keras."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="folder written by `visionpipe prepare`")
    parser.add_argument("--model", required=True, help="folder written by `visionpipe train`")
    parser.add_argument("--output", required=True, help="export folder to write")
    add_config_arguments(parser)


def execute(args: argparse.Namespace) -> int:
    from components.export.config import ExportConfig
    from components.export.core import run

    run(stage_config(ExportConfig, args.config, args.set), args.dataset, args.model, args.output)
    return 0


main = stage_main("export", DESCRIPTION, add_arguments, execute)
