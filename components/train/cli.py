"""`visionpipe train` / `python -m components.train`."""

from __future__ import annotations

import argparse
import functools

from components.infra.cli import add_stage_io, run_with_storage, stage_main
from components.infra.config import stage_config

DESCRIPTION = "Train an image classifier on a prepared dataset."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_io(parser, ("dataset",), "model")
    parser.add_argument(
        "--print-metrics",
        action="store_true",
        help="print each epoch's metrics to stdout as name=value (Katib's metrics collector)",
    )
    parser.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="K-fold cross-validation over train+val first (train.cross_validate=K)",
    )


def execute(args: argparse.Namespace) -> int:
    from components.train.config import TrainConfig
    from components.train.core import run

    overrides = [*(args.set or []), *([f"cross_validate={args.cv}"] if args.cv is not None else [])]
    config = stage_config(TrainConfig, args.config, overrides)
    # a gs:// output keeps the resumable state beside it: the same command on another
    # machine (a fresh disk, HOME and TMPDIR) resumes where a killed one stopped
    run_with_storage(
        functools.partial(run, state_uri=args.output, print_metrics=args.print_metrics),
        config,
        [args.dataset],
        args.output,
    )
    return 0


main = stage_main("train", DESCRIPTION, add_arguments, execute)
