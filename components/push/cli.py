"""`visionpipe push` / `python -m components.push`."""

from __future__ import annotations

import argparse

from components.infra.cli import add_config_arguments, stage_main
from components.infra.config import stage_config

DESCRIPTION = "Publish a blessed, verified export to a registry folder or gs:// bucket."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", required=True, help="folder written by `visionpipe export`")
    parser.add_argument(
        "--evaluation",
        required=True,
        help="folder written by `visionpipe evaluate` (its blessing is checked)",
    )
    parser.add_argument(
        "--model",
        help="folder written by `visionpipe train`: published too, so a later run's gate "
        "can re-measure this version (evaluate.baseline_model)",
    )
    parser.add_argument(
        "--dataset",
        help="folder written by `visionpipe prepare`: its split manifests are published too "
        "(prepare.keep_splits)",
    )
    add_config_arguments(parser)


def execute(args: argparse.Namespace) -> int:
    from components.push.config import PushConfig
    from components.push.core import run

    config = stage_config(PushConfig, args.config, args.set)
    if not config.registry:
        from components.infra.errors import UserError

        raise UserError("no registry given; pass --set registry=DIR or gs://BUCKET/PREFIX")
    run(config, args.export, args.evaluation, model=args.model, dataset=args.dataset)
    return 0


main = stage_main("push", DESCRIPTION, add_arguments, execute)
