"""Does Grad-CAM point at the evidence? Data whose answer is known (tests/quadrants.py):
the class is decided only by a small patch in one quadrant. For each seed: write the
pictures, prepare, train (the train stage's defaults but `--epochs`), run
`visionpipe explain`'s code on the test split, and count the peaks that fall in the
patch's quadrant. Two kinds of data:

  pattern   the patch's two-colour pattern is the class; its quadrant is random
  position  the patch is the same for every class; its quadrant is the class

    .venv/bin/python -m benchmarks.gradcam_quadrants [--seeds 3] [--epochs 15]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.quadrants import picture, quadrant_of, write_quadrant_images

POSITION_CLASSES = ("top_left", "top_right", "bottom_left", "bottom_right")


def write_position_images(root: Path, per_class: int, width: int, height: int, seed: int):
    """Class = the quadrant of one red_blue patch (picture() puts it at a random one, so
    draw until it lands in the class's)."""
    rng = np.random.default_rng(seed)
    quadrants = {}
    for k, label in enumerate(POSITION_CLASSES):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            while True:
                array, quadrant = picture(rng, "red_blue", width, height, 8)
                if quadrant == k:
                    break
            path = root / label / f"{label}_{index:03d}.png"
            Image.fromarray(array).save(path)
            quadrants[str(path)] = quadrant
    return quadrants


def measure(kind: str, seed: int, epochs: int, work: Path) -> dict:
    from components.explain.core import explain_files
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.train.config import TrainConfig
    from components.train.core import run as train

    images = work / kind / str(seed) / "images"
    width, height = 72, 56
    if kind == "pattern":
        quadrants = write_quadrant_images(images, 80, width, height, seed=seed)
    else:
        quadrants = write_position_images(images, 60, width, height, seed)
    dataset, model = images.parent / "dataset", images.parent / "model"
    prepare(PrepareConfig(image_size=48), images, dataset)
    metrics = train(TrainConfig(epochs=epochs, seed=seed), dataset, model)
    with open(dataset / "splits" / "test.csv") as handle:
        test = [row["uri"] for row in csv.DictReader(handle)]
    started = time.perf_counter()
    rows = explain_files(str(model), test, str(images.parent / "explained"))
    seconds = time.perf_counter() - started
    hits = 0
    for row in rows:
        w, h = Image.open(row["image"]).size
        hits += quadrant_of(row["peak_x"], row["peak_y"], w, h) == quadrants[row["image"]]
    return {
        "kind": kind,
        "seed": seed,
        "val_accuracy": metrics["val_accuracy"],
        "peaks_in_quadrant": hits,
        "test_images": len(rows),
        "share": round(hits / len(rows), 3),
        "layer": rows[0]["layer"],
        "explain_ms_per_image": round(1000 * seconds / len(rows), 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--kinds", default="pattern,position")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            for seed in range(args.seeds):
                results.append(measure(kind, seed, args.epochs, Path(tmp)))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    summary = {
        kind: round(float(np.mean([r["share"] for r in results if r["kind"] == kind])), 3)
        for kind in args.kinds.split(",")
    }
    out = {"results": results, "mean_share": summary, "epochs": args.epochs}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
