"""`visionpipe export` / `python -m components.export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from components.infra.cli import add_stage_io, run_with_storage, stage_main
from components.infra.config import stage_config

DESCRIPTION = "Export a trained model to SavedModel, TFLite and ONNX, verified against Keras."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_io(parser, ("dataset", "model"), "export")
    parser.add_argument(
        "--evaluation", help="folder written by `visionpipe evaluate` (the card's test metrics)"
    )


def execute(args: argparse.Namespace) -> int:
    import functools

    from components.export.config import ExportConfig
    from components.export.core import run
    from components.infra import storage

    config = stage_config(ExportConfig, args.config, args.set)
    evidence = f"{args.output.rstrip('/')}.failed"
    if not storage.is_remote(args.output):
        evidence = str(Path(evidence).resolve())
    inputs = [args.dataset, args.model]
    if args.evaluation:
        inputs.append(args.evaluation)

        def stage(config, dataset, model, evaluation, output):
            return run(config, dataset, model, output, evaluation, evidence)
    else:
        stage = functools.partial(run, evidence_uri=evidence)
    run_with_storage(stage, config, inputs, args.output)
    return 0


main = stage_main("export", DESCRIPTION, add_arguments, execute)
