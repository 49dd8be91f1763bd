"""The shape every stage command line shares: `--config FILE`, `--set key=value`, exit codes."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from components.common.errors import exit_on_user_error


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config (whole-run or this stage's)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key (repeatable), e.g. --set epochs=5",
    )


STAGE_INPUTS = {
    "dataset": "folder written by `visionpipe prepare`",
    "model": "folder written by `visionpipe train`",
}


def add_stage_io(parser: argparse.ArgumentParser, inputs: tuple[str, ...], output: str) -> None:
    """`--<input>` for each upstream artifact, `--output`, then `--config`/`--set`."""
    for name in inputs:
        parser.add_argument(f"--{name}", required=True, help=STAGE_INPUTS[name])
    parser.add_argument("--output", required=True, help=f"{output} folder to write")
    add_config_arguments(parser)


def run_with_storage(run: Callable, config, inputs: list[str], output: str):
    """`run(config, *inputs, output)` where any of them may be gs:// folders.

    gs:// inputs (complete stage outputs: they hold config.json) are copied to a
    temporary folder; a gs:// output is written locally and uploaded when the
    stage has finished, config.json last, so a reader never takes a partial one.
    """
    import contextlib

    from components.common import storage

    with contextlib.ExitStack() as stack:
        local = [stack.enter_context(storage.local_folder(i, "config.json")) for i in inputs]
        target = stack.enter_context(storage.output_folder(output))
        return run(config, *local, target)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def stage_main(
    stage: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    execute: Callable[[argparse.Namespace], int | None],
) -> Callable[[list[str] | None], int]:
    """Build `main(argv)` for `python -m components.<stage>`."""

    @exit_on_user_error
    def main(argv: list[str] | None = None) -> int | None:
        parser = argparse.ArgumentParser(
            prog=f"python -m components.{stage}", description=description
        )
        add_arguments(parser)
        quiet_tensorflow()
        return execute(parser.parse_args(argv))

    return main
