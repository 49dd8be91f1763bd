"""`visionpipe serve SOURCE [--host H] [--port P] [--log LOCATION] ...`.

The server runs in its own venv (.venv-serve, `make serve-venv`): kserve 0.21 pins
pandas<3 and psutil<6, the training stack has pandas 3 and psutil 7. `launch` (what the
`visionpipe` command calls) runs it here when this interpreter has kserve (the serving
image), else re-executes it with .venv-serve's python."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from components.infra.errors import UserError, exit_on_user_error
from components.serve.inputs import MAX_BODY_BYTES, MAX_IMAGES, MAX_PIXELS

ROOT = Path(__file__).resolve().parents[2]
SERVE_PYTHON_ENV = "VISIONPIPE_SERVE_PYTHON"  # another interpreter with kserve, if wanted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionpipe serve",
        description="serve the fastest verified ONNX/OpenVINO file of a published version "
        "or an export folder over KServe's v1/v2 REST protocols, with a page at /",
    )
    parser.add_argument(
        "source", help="REGISTRY/MODEL (latest), REGISTRY/MODEL/VERSION or EXPORT_DIR"
    )
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--name", help="the model name in URLs (default: the published name)")
    parser.add_argument(
        "--version", help="the version answers report (default: the published version's)"
    )
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help="per image, from its header"
    )
    parser.add_argument("--max-images", type=int, default=MAX_IMAGES, help="per request")
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20)
    parser.add_argument(
        "--log", metavar="LOCATION", help="prediction logs: a folder, gs://, s3://, minio://"
    )
    parser.add_argument(
        "--log-sample-rate", type=float, default=1.0, help="share of requests logged"
    )
    parser.add_argument("--log-daily-cap", type=int, default=100_000, help="records per day")
    parser.add_argument("--log-flush-seconds", type=float, default=2.0)
    add_log_format_arguments(parser)
    return parser  # fmt: skip


def add_log_format_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("jsonl", "parquet"),
        default="jsonl",
        help="prediction log shards: JSON lines or Parquet (one file per flush)",
    )
    parser.add_argument(
        "--log-images", action="store_true",
        help="also store each request image, once, under its sha256 beside the records "
        "(off by default: the images are what users sent; see docs/cli.md on privacy)",
    )  # fmt: skip


def launch(argv: list[str], verb: str = "serve") -> int:
    """Run `serve` or `collect` in an interpreter that has kserve; one line, exit 2 if none."""
    if importlib.util.find_spec("kserve") is not None:
        return collect_main(argv) if verb == "collect" else main(argv)
    python = os.environ.get(SERVE_PYTHON_ENV) or str(ROOT / ".venv-serve" / "bin" / "python")
    if not Path(python).is_file():
        print(
            f"visionpipe: error: the serving venv is not installed ({python} missing): run "
            "`make serve-venv` (kserve needs pandas<3, so it has a venv of its own)",
            file=sys.stderr,
        )
        return 2
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    verbs = ["collect"] if verb == "collect" else []
    os.execve(python, [python, "-m", "components.serve", *verbs, *argv], env)  # fmt: skip
    return 0  # not reached


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from components.serve.inputs import Limits
    from components.serve.model import open_served
    from components.serve.predlog import PredictionLog

    if args.top_k < 1 or args.max_pixels < 1 or args.max_images < 1 or args.max_body_mb <= 0:
        raise UserError("--top-k, --max-pixels, --max-images and --max-body-mb must be > 0")
    served = open_served(args.source, args.name)
    if args.version:  # a KServe pod serves /mnt/models, a copy that has no version name
        served.version = args.version
    log = None
    if args.log:
        log = PredictionLog(log_settings(args), served.name, served.version)
    limits = Limits(args.max_pixels, args.max_images, int(args.max_body_mb * 2**20))
    sys.argv = sys.argv[:1]  # kserve parses sys.argv when imported: it must not see ours
    from components.serve.server import VisionModel, start

    try:
        start(VisionModel(served, limits, args.top_k, log), args.host, args.port)
    finally:
        if log is not None:
            log.close()
    return 0


def log_settings(args: argparse.Namespace):
    """The prediction log's settings from --log and --log-*, checked (one line if not)."""
    from components.infra import storage
    from components.serve.predlog import LogSettings

    settings = LogSettings(
        storage.check_location(args.log, "--log"),
        sample_rate=args.log_sample_rate,
        daily_cap=args.log_daily_cap,
        flush_seconds=args.log_flush_seconds,
        log_format=args.log_format,
        log_images=args.log_images,
    )
    try:
        settings.validate()
    except ValueError as error:
        raise UserError(str(error)) from None
    return settings


def build_collect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionpipe collect",
        description="receive KServe payload-logger CloudEvents and write prediction records",
    )
    parser.add_argument(
        "--log", metavar="LOCATION", required=True, help="a folder, gs://, s3://, minio://"
    )
    parser.add_argument("--model", metavar="SOURCE", help="the deployed version: labels, OOD score")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--log-sample-rate", type=float, default=1.0)
    parser.add_argument("--log-daily-cap", type=int, default=100_000)
    parser.add_argument("--log-flush-seconds", type=float, default=2.0)
    add_log_format_arguments(parser)
    return parser  # fmt: skip


@exit_on_user_error
def collect_main(argv: list[str] | None = None) -> int:
    args = build_collect_parser().parse_args(argv)
    import uvicorn

    from components.serve.collect import Collector, app
    from components.serve.predlog import PredictionLog

    served = None
    if args.model:
        from components.serve.model import open_served

        served = open_served(args.model)
    name = served.name if served else "model"
    log = PredictionLog(log_settings(args), name, served.version if served else "")
    print(f"collecting on http://{args.host}:{args.port}/ into {args.log}", file=sys.stderr)
    try:
        uvicorn.run(app(Collector(log, served, args.top_k)), host=args.host, port=args.port)
    finally:
        log.close()
    return 0
