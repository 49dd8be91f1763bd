"""`visionpipe evaluate` / `python -m components.evaluate`."""

from __future__ import annotations

import argparse

from components.infra.cli import add_stage_io, run_with_storage, stage_main
from components.infra.config import stage_config

DESCRIPTION = "Evaluate a trained model on the test split and decide whether to bless it."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_io(parser, ("dataset", "model"), "evaluation")


def execute(args: argparse.Namespace) -> int:
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run

    config = stage_config(EvaluateConfig, args.config, args.set)
    run_with_storage(run, config, [args.dataset, args.model], args.output)
    return 0


main = stage_main("evaluate", DESCRIPTION, add_arguments, execute)
