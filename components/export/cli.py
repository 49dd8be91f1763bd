"""`visionpipe export` / `python -m components.export`."""

from __future__ import annotations

import argparse

from components.common.cli import add_stage_io, run_with_storage, stage_main
from components.common.config import stage_config

DESCRIPTION = "Export a trained model to SavedModel, TFLite and ONNX, verified against Keras."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_io(parser, ("dataset", "model"), "export")


def execute(args: argparse.Namespace) -> int:
    from components.export.config import ExportConfig
    from components.export.core import run

    config = stage_config(ExportConfig, args.config, args.set)
    run_with_storage(run, config, [args.dataset, args.model], args.output)
    return 0


main = stage_main("export", DESCRIPTION, add_arguments, execute)
