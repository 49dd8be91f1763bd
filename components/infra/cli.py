"""The shape every stage command line shares: `--config FILE`, `--set key=value`, exit codes."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Callable

from components.infra.errors import exit_on_user_error


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
    """`run(config, *inputs, output)` where any of them may be object-store folders
    (gs://, s3://, minio://).

    Remote inputs (complete stage outputs: they hold config.json) are copied to a
    temporary folder; a remote output is written locally and uploaded when the
    stage has finished, config.json last, so a reader never takes a partial one.
    """
    import contextlib

    from components.infra import storage

    with contextlib.ExitStack() as stack:
        local = [stack.enter_context(storage.local_folder(i, "config.json")) for i in inputs]
        target = stack.enter_context(storage.output_folder(output))
        return run(config, *local, target)


# what TensorFlow's C++ side prints while it loads, before its log level applies (absl
# is not initialised yet, so TF_CPP_MIN_LOG_LEVEL cannot hold it back): info lines such
# as "oneDNN custom operations are on", on CPUs where that is so, and absl's preamble
PRE_INIT_CHATTER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written"
    rb" to STDERR|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*)$"
)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Loads `tensorflow` with file descriptor 2 captured, then writes back every line
    but the start-up chatter: warnings and errors still reach the terminal."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: find the real spec, wrap its loader
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                with _filtered_stderr():
                    real.exec_module(module)

        spec.loader = Loader()
        return spec


@contextlib.contextmanager
def _filtered_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().splitlines(keepends=True):
                if not PRE_INIT_CHATTER.match(line.rstrip(b"\r\n")):
                    os.write(2, line)


def skip_final_collection() -> None:
    """Exit without the interpreter's last garbage collection: with TensorFlow loaded it
    walks millions of objects for about 1.6 s on every command and pipeline task that is
    about to end anyway. `gc.freeze()` in an exit handler moves them out of the collector's
    reach; exit handlers, flushes and the exit status are unchanged (tests/test_cli.py)."""
    atexit.unregister(gc.freeze)  # once, however often it is asked for
    atexit.register(gc.freeze)


def limit_blas_threads() -> None:
    """numpy's and SciPy's BLAS (OpenBLAS) on one thread in visionpipe's processes, unless
    OPENBLAS_NUM_THREADS is set: the matrices here are small (thousands by hundreds),
    where OpenBLAS's threads cost more than they compute (evaluate's logistic-regression
    baseline on the digits: 1.5 CPU s with 2 threads, 0.1 s with 1, on this 2-core
    machine). The variable reaches libraries loaded later and child processes;
    threadpoolctl limits the ones already loaded. TensorFlow's thread pools are its own."""
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the user's terminal (it is imported
    only where a command needs it; this applies whenever that is)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


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
        skip_final_collection()
        limit_blas_threads()
        return execute(parser.parse_args(argv))

    return main
