"""Validate's cost at 1x and 4x the data, with the same new images.

    .venv/bin/python benchmarks/validate_scale.py [--out build/validate-scale] [--repeats 2]

Night 1 is night_one()'s 80% of the digits (benchmarks/validate_nights.py); at 4x it
also holds three copies of each of those images with one pixel changed (another
sha256: distinct images to prepare and validate; the copies are no duplicates). Each
night 1 is prepared and published with the same small model (2 epochs, width 8: the
checks' cost does not depend on its accuracy) and its dataset, so the registry holds
what push publishes (split manifests, the reference sample). Night 2 is night 1 plus
the same 360 new digits; it is prepared with keep_splits on the published version,
then validated (on_anomaly=warn) `--repeats` times; the median seconds are printed
with the counts and sample sizes, one JSON line per scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.validate_nights import night_one, write_night  # noqa: E402


def copies(folder: Path, times: int) -> None:
    """`times` - 1 more copies of every image, each with one pixel nudged by one level."""
    from PIL import Image

    originals = sorted(folder.rglob("*.png"))
    for k in range(1, times):
        for path in originals:
            pixels = np.array(Image.open(path))
            flat = pixels.reshape(-1)
            flat[k % flat.size] = (int(flat[k % flat.size]) + 1) % 256
            Image.fromarray(pixels).save(path.parent / f"copy{k}-{path.name}")


def publish_night(root: Path, data: Path, model: Path | None) -> tuple[str, Path]:
    """Night 1 prepared, and pushed with `model` (trained here on the first call)."""
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.push.config import PushConfig
    from components.push.core import run as push
    from components.train.config import TrainConfig
    from components.train.core import run as train

    prepare(PrepareConfig(), str(data), root / "dataset")
    if model is None:
        model = root / "model"
        train(TrainConfig(epochs=2, width=8, preflight="warn"), root / "dataset", model)
    evaluate(EvaluateConfig(min_accuracy=0.0), root / "dataset", model, root / "evaluation")
    export = root / "export"
    export.mkdir(exist_ok=True)
    (export / "model.onnx").write_bytes(b"night 1")
    (export / "parity.json").write_text(json.dumps({"onnx": {"passed": True}}))
    config = PushConfig(serving="none", registry=str(root / "registry"), version="night1")
    push(config, export, root / "evaluation", model, root / "dataset")
    return str(root / "registry" / "visionpipe-classifier"), model


def one_scale(out: Path, digits_dir: Path, times: int, model, repeats: int) -> tuple[dict, Path]:
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.validate.config import ValidateConfig
    from components.validate.core import run as validate

    root = out / f"x{times}"
    shutil.rmtree(root, ignore_errors=True)
    night1 = write_night(root / "night1-data", digits_dir, everything=False)
    copies(night1, times)
    reference, model = publish_night(root / "night1", night1, model)
    night2 = root / "night2-data"
    shutil.copytree(night1, night2)
    for folder in sorted(p for p in digits_dir.iterdir() if p.is_dir()):
        for image in sorted(folder.glob("*.png")):
            if not night_one(image.name):
                shutil.copy(image, night2 / folder.name / image.name)
    prepare(PrepareConfig(keep_splits=reference), str(night2), root / "dataset")
    seconds = []
    for n in range(repeats):
        started = time.perf_counter()
        result = validate(
            ValidateConfig(on_anomaly="warn"), root / "dataset", root / f"validation{n}", reference
        )
        seconds.append(time.perf_counter() - started)
    return {
        "scale": f"{times}x",
        "images": result["counts"]["images"],
        "new": result["counts"]["new"],
        "known": result["counts"]["known"],
        "sample": {g: s["images"] for g, s in result["sample"].items()},
        "reference_sample": result["reference_sample"],
        "validate_s": [round(s, 2) for s in seconds],
        "median_s": round(statistics.median(seconds), 2),
        "anomalies": result["anomalies"],
        "skipped": result["skipped"],
    }, model


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/validate-scale")
    parser.add_argument("--scales", default="1,4")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    from components.vision.digits import resolve_builtin

    digits_dir = Path(resolve_builtin("builtin:digits"))
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}), flush=True)
    rows, model = [], None
    for times in (int(t) for t in args.scales.split(",")):
        row, model = one_scale(Path(args.out), digits_dir, times, model, args.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
