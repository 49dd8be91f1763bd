"""Prepare at scale: images/second and peak memory at two dataset sizes.

    .venv/bin/python -m benchmarks.prepare_scale [--sizes 5000 20000] [--dedupe near]

Makes synthetic JPEG class folders (10 classes of 96x96 pictures: coloured
shapes on noise, made by this script, cached under the work folder), then runs
`python -m components.prepare` on each size in a child process and reads that
child's peak resident memory (ru_maxrss of the largest process: the stage
itself or one of its decoding workers). Memory must not grow with the number
of images. Prints one JSON object; record it in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def make_image(args: tuple[str, int, int]) -> None:
    from PIL import Image, ImageDraw

    path, label, seed = args
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (96, 96, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    x, y = rng.integers(10, 50, 2)
    size = int(rng.integers(20, 40))
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))
    shape = [draw.ellipse, draw.rectangle, draw.polygon][label % 3]
    if shape is draw.polygon:
        draw.polygon([(x, y + size), (x + size // 2, y), (x + size, y + size)], fill=colour)
    else:
        shape([x, y, x + size, y + size], fill=colour)
    image.rotate(label * 17).save(path, quality=90)


def make_dataset(folder: Path, count: int, classes: int = 10) -> None:
    done = folder / ".complete"
    if done.exists() and int(done.read_text()) == count:
        return
    jobs = []
    for n in range(count):
        label = n % classes
        (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
        jobs.append((str(folder / f"class_{label}" / f"{n:06d}.jpg"), label, n))
    with ProcessPoolExecutor() as pool:
        list(pool.map(make_image, jobs, chunksize=256))
    done.write_text(str(count))


def run_prepare(data: Path, output: Path, dedupe: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "components.prepare",
            "--data",
            str(data),
            "--output",
            str(output),
            "--set",
            f"dedupe={dedupe}",
            "--set",
            "image_size=64",
        ],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    stats = json.loads((output / "stats.json").read_text())
    return {
        "images": stats["counts"]["total"],
        "seconds": round(seconds, 1),
        "images_per_s": round(stats["counts"]["total"] / seconds, 1),
        # ru_maxrss of children only ever grows: a later, smaller run reports the earlier peak
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "previous_peak_mb": round(before / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--dedupe", default="near", choices=("exact", "near", "off"))
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.gettempdir()) / "visionpipe-prepare-scale"
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "dedupe": args.dedupe,
    }
    for size in sorted(args.sizes):  # ascending, so each peak is this size's own
        data = work / f"jpegs-{size}"
        start = time.perf_counter()
        make_dataset(data, size)
        generated = round(time.perf_counter() - start, 1)
        result = run_prepare(data, work / f"prepared-{size}", args.dedupe)
        results[str(size)] = {**result, "generate_s": generated}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
