"""`visionpipe validate` / `python -m components.validate`."""

from __future__ import annotations

import argparse

from components.infra.cli import add_config_arguments, stage_main
from components.infra.config import stage_config

DESCRIPTION = "Check a prepared dataset against the deployed version before training."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="folder written by `visionpipe prepare`")
    parser.add_argument(
        "--reference",
        default="",
        help="the deployed version: <registry>/<model_name>[/<version>] or a dataset folder "
        "(default: validate.reference)",
    )
    parser.add_argument("--output", required=True, help="validation folder to write")
    add_config_arguments(parser)


def execute(args: argparse.Namespace) -> int:
    from components.infra import storage
    from components.validate.config import ValidateConfig
    from components.validate.core import run

    config = stage_config(ValidateConfig, args.config, args.set)
    with storage.local_folder(args.dataset, "config.json") as dataset:
        with storage.output_folder(args.output) as output:
            run(config, dataset, output, args.reference)
    return 0


main = stage_main("validate", DESCRIPTION, add_arguments, execute)
