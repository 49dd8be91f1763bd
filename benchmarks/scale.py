"""The cost curve: per-stage seconds and peak memory of the real pipeline as data grows.

    .venv/bin/python -m benchmarks.scale [--sizes 2000 8000 32000] [--image-size 64]
        [--epochs 1] [--out build/scale] [--plot docs/scale.png]

Makes synthetic JPEG class folders (8 classes of 96x96 coloured shapes on noise, the
generator of benchmarks/prepare_scale.py, cached under --out), then runs the stages as
the pipeline's tasks run them, each its own process: `visionpipe prepare` (with
`--set image_size`), `train` (`--set epochs`), `evaluate` and `export` (tflite, onnx,
onnx_int8; the float formats' parity on the whole test split). Each stage's wall time
and peak resident memory (ru_maxrss from wait4: the stage process or the largest of
its workers) are recorded, and the growth exponent b of cost ~ n^b is fitted per stage
by least squares on log-log axes. Prints JSON, a Markdown table for
docs/benchmarks.md, and saves the log-log plot to --plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("prepare", "train", "evaluate", "export")


def run_stage(command: list[str], log: Path) -> dict:
    """Run one stage process; its wall seconds and peak RSS (MiB) from wait4."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command[:3])} failed ({process.returncode}); see {log}")
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
    }


def run_pipeline(data: Path, work: Path, args) -> dict:
    exe = [sys.executable, "-m", "pipelines.cli"]
    work.mkdir(parents=True, exist_ok=True)
    dataset, model, evaluation, export = (work / n for n in ("dataset", "model", "eval", "export"))
    commands = {
        "prepare": [
            *exe,
            "prepare",
            "--data",
            str(data),
            "--output",
            str(dataset),
            "--set",
            f"image_size={args.image_size}",
        ],
        "train": [
            *exe,
            "train",
            "--dataset",
            str(dataset),
            "--output",
            str(model),
            "--set",
            f"epochs={args.epochs}",
        ],
        "evaluate": [
            *exe,
            "evaluate",
            "--dataset",
            str(dataset),
            "--model",
            str(model),
            "--output",
            str(evaluation),
            "--set",
            "min_accuracy=0",
        ],
        "export": [
            *exe,
            "export",
            "--dataset",
            str(dataset),
            "--model",
            str(model),
            "--evaluation",
            str(evaluation),
            "--output",
            str(export),
            "--set",
            "formats=[tflite,onnx,onnx_int8]",
            "--set",
            "max_quantized_accuracy_drop=1.0",
        ],
    }
    found = {}
    for stage in STAGES:
        found[stage] = run_stage(commands[stage], work / f"{stage}.log")
        print(json.dumps({"stage": stage, **found[stage]}), file=sys.stderr, flush=True)
    found["total"] = {
        "seconds": round(sum(v["seconds"] for v in found.values()), 2),
        "peak_rss_mib": max(v["peak_rss_mib"] for v in found.values()),
    }
    return found


def exponent(sizes: list[int], values: list[float]) -> float:
    """b in value ~ n^b, least squares on log-log axes."""
    slope, _ = np.polyfit(np.log(sizes), np.log(values), 1)
    return round(float(slope), 3)


def markdown(sizes: list[int], results: dict[int, dict]) -> str:
    header = "| stage | " + " | ".join(f"{n:,} images" for n in sizes) + " | exponent |"
    lines = [header, "|---" * (len(sizes) + 2) + "|"]
    for stage in (*STAGES, "total"):
        for key, unit in (("seconds", "s"), ("peak_rss_mib", "MiB")):
            values = [results[n][stage][key] for n in sizes]
            cells = " | ".join(f"{v:,.0f} {unit}" for v in values)
            label = f"{stage} {'time' if key == 'seconds' else 'peak RSS'}"
            lines.append(f"| {label} | {cells} | {exponent(sizes, values)} |")
    return "\n".join(lines)


def plot(sizes: list[int], results: dict[int, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in (
        (axes[0], "seconds", "wall time (s)"),
        (axes[1], "peak_rss_mib", "peak RSS (MiB)"),
    ):
        for stage in (*STAGES, "total"):
            values = [results[n][stage][key] for n in sizes]
            ax.loglog(sizes, values, "o-", label=f"{stage} (b={exponent(sizes, values)})")
        ax.set_xlabel("images")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.prepare_scale import make_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--out", default="build/scale")
    parser.add_argument("--plot", default="docs/scale.png")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = {}
    for size in args.sizes:
        data = out / f"images-{size}"
        make_dataset(data, size, classes=args.classes)
        results[size] = run_pipeline(data, out / f"run-{size}", args)
        print(json.dumps({"images": size, **results[size]}), flush=True)
    summary = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "sizes": args.sizes,
        "results": results,
        "exponents": {
            stage: {
                key: exponent(args.sizes, [results[n][stage][key] for n in args.sizes])
                for key in ("seconds", "peak_rss_mib")
            }
            for stage in (*STAGES, "total")
        },
    }
    print(json.dumps(summary))
    print(markdown(args.sizes, results))
    if len(args.sizes) > 1:
        plot(args.sizes, results, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
