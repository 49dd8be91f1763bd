"""The default `visionpipe run` on builtin:digits against an RBF SVM on the same split.

    .venv/bin/python -m benchmarks.digits_run [--output DIR] [--set stage.key=value ...]

Runs the whole pipeline (kfp.local, default config), then fits scikit-learn's
SVC(kernel="rbf") on the raw 8x8 pixels of the same train+val images and
scores it on the same test images. Prints one JSON object; record it in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image


def svm_baseline(dataset: Path) -> dict:
    from sklearn.svm import SVC

    def load(split):
        with open(dataset / "splits" / f"{split}.csv") as handle:
            rows = list(csv.DictReader(handle))
        x = np.stack(
            [np.asarray(Image.open(r["uri"]).convert("L"), np.float32).ravel() / 255 for r in rows]
        )
        return x, np.array([r["label"] for r in rows])

    x_train, y_train = load("train")
    x_val, y_val = load("val")
    x_test, y_test = load("test")
    start = time.perf_counter()
    svm = SVC(kernel="rbf", C=10, gamma="scale")
    svm.fit(np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]))
    accuracy = float((svm.predict(x_test) == y_test).mean())
    return {"test_accuracy": accuracy, "fit_s": round(time.perf_counter() - start, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="runs/benchmarks")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipelines.cli import run_configs
    from pipelines.local_run import run_pipeline

    start = time.perf_counter()
    summary = run_pipeline("builtin:digits", run_configs(None, args.set), args.output)
    wall = time.perf_counter() - start
    run_dir = Path(args.output).resolve() / summary["run_id"]
    baseline = svm_baseline(run_dir / "dataset")
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
                "run_id": summary["run_id"],
                "pipeline_wall_s": round(wall, 1),
                "timings_s": summary["timings_s"],
                "test_accuracy": summary["test_accuracy"],
                "macro_f1": summary["macro_f1"],
                "svm_rbf_test_accuracy": baseline["test_accuracy"],
                "accuracy_minus_svm": round(
                    summary["test_accuracy"] - baseline["test_accuracy"], 4
                ),
                "parity": json.loads((run_dir / "export" / "parity.json").read_text()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
