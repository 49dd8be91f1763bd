"""`visionpipe prepare` / `python -m components.prepare`."""

from __future__ import annotations

import argparse

from components.infra.cli import add_config_arguments, run_with_storage, stage_main
from components.infra.config import stage_config

DESCRIPTION = "Validate, de-duplicate, split and shard a labelled image source."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default="builtin:digits",
        help="folder of class sub-folders, gs:// prefix, or builtin:digits",
    )
    parser.add_argument("--output", required=True, help="dataset folder to write")
    add_config_arguments(parser)


def execute(args: argparse.Namespace) -> int:
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run

    config = stage_config(PrepareConfig, args.config, args.set)
    run_with_storage(lambda c, out: run(c, args.data, out), config, [], args.output)
    return 0


main = stage_main("prepare", DESCRIPTION, add_arguments, execute)
