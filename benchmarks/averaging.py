"""Averaging weights and models on the digits and on a harder noisy digits set:
plain training against EMA and SWA, and an ensemble against its best member.

    .venv/bin/python benchmarks/averaging.py [--epochs 20] [--members 3] [--noise 70]
        [--sets digits,noisy] [--out build/averaging]

Each run is the real train stage and the real evaluate stage (test split, the
temperature fitted on val); `noisy` is the digits with Gaussian pixel noise of
standard deviation `--noise` (0..255 scale) and one random 12x12 occlusion per
image, written once as PNG folders and prepared like user data. Prints one JSON
line per set: test accuracy, macro F1 and ECE of each variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def noisy_digits(folder: Path, noise: float, seed: int = 0) -> Path:
    """The digits at 32 px with Gaussian noise and an occluding square, as class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits

    if folder.exists():
        return folder
    rng = np.random.default_rng(seed)
    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        gray = Image.fromarray(np.rint(pixels * 255 / 16).astype(np.uint8), "L").resize((32, 32))
        image = np.asarray(gray, dtype=np.float64) + rng.normal(0, noise, (32, 32))
        y, x = rng.integers(0, 20, 2)
        image[y : y + 12, x : x + 12] = rng.uniform(0, 255)
        target = folder / str(label)
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(target / f"{index:04d}.png")
    return folder


def measure(dataset: Path, model: Path, out: Path) -> dict:
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate

    metrics = evaluate(EvaluateConfig(min_accuracy=0.0), dataset, model, out)["metrics"]
    found = {k: round(metrics[k], 4) for k in ("accuracy", "macro_f1", "ece")}
    if "ensemble" in metrics:
        found["members"] = [round(m["accuracy"], 4) for m in metrics["ensemble"]["members"]]
        found["beats_best_member"] = metrics["ensemble"]["beats_best_member"]
    return found


def run_set(name: str, source: str, args, root: Path) -> dict:
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.train.config import TrainConfig
    from components.train.core import run as train

    dataset = root / name / "dataset"
    if not (dataset / "stats.json").exists():
        prepare(PrepareConfig(image_size=32), source, dataset)
    variants = {
        "plain": {},
        "ema": {"ema": True},
        "swa": {"swa_start": max(1, args.epochs * 2 // 3)},
        "ensemble": {"ensemble": args.members},
    }
    result: dict = {"set": name, "epochs": args.epochs}
    for variant, extra in variants.items():
        started = time.time()
        config = TrainConfig(epochs=args.epochs, early_stopping_patience=args.epochs, **extra)
        model = root / name / variant
        train(config, dataset, model)
        result[variant] = measure(dataset, model, root / name / f"{variant}-evaluation")
        result[variant]["seconds"] = round(time.time() - started, 1)
        print(json.dumps({"set": name, variant: result[variant]}), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--noise", type=float, default=70.0)
    parser.add_argument("--sets", default="digits,noisy")
    parser.add_argument("--out", default="build/averaging")
    args = parser.parse_args(argv)
    root = Path(args.out)
    sources = {
        "digits": "builtin:digits",
        "noisy": str(noisy_digits(root / "noisy-digits-png", args.noise)),
    }
    print(
        json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()})
    )
    for name in args.sets.split(","):
        print(json.dumps(run_set(name, sources[name], args, root)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
