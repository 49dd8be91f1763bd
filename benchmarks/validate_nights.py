"""False alarms and catches of the validate stage, and the gate on clean nights, over seeds.

    .venv/bin/python benchmarks/validate_nights.py [--seeds 5] [--epochs 8] [--out build/nights]

For each seed: night 1 is a seeded 80% of the digits, prepared, trained (train.seed =
the seed), evaluated and pushed to a registry like the pipeline does. Night 2 is all
of the digits, clean or with one kind of trouble (poison()), prepared with
keep_splits on the registry and validated against it (on_anomaly=warn, so every
check's verdict is read). A clean night 2 is also trained with another seed and
evaluated with the gate on the deployed version (the scheduled settings): it must be
blessed. Prints one JSON line per seed and a summary line: the false-alarm rate
(clean nights with any anomaly), the gate's refusals of clean nights, and per kind
of trouble the share of nights on which the expected check named it.
"""

from __future__ import annotations

import argparse
import hashlib
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

# the kind of trouble -> the check that must name it
KINDS = {
    "swap_3_8": "label_agreement",
    "noise": "out_of_distribution",
    "relabel_known": "changed_labels",
    "new_class": "schema",
    "vanished_class": "schema",
    "brighter": "image_stats",
}


def night_one(name: str, seed: int = 0) -> bool:
    """80% of the digits are night 1's (a stable, seeded choice by file name)."""
    return int(hashlib.md5(f"{seed}:{name}".encode()).hexdigest(), 16) % 5 != 0


def write_night(target: Path, digits_dir: Path, everything: bool = True, seed: int = 0) -> Path:
    """The digits' class folders: all of them, or night 1's 80%."""
    for folder in sorted(p for p in Path(digits_dir).iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.glob("*.png")):
            if everything or night_one(image.name, seed):
                shutil.copy(image, target / folder.name / image.name)
    return target


def new_files(folder: Path, label: str, seed: int = 0) -> list[Path]:
    """Night 2's images of a class that night 1 did not have."""
    return [p for p in sorted((folder / label).glob("*.png")) if not night_one(p.name, seed)]


def poison(kind: str, data: Path, seed: int = 0) -> None:
    """One kind of trouble in a night-2 folder (KINDS)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if kind == "swap_3_8":
        three, eight = new_files(data, "3", seed), new_files(data, "8", seed)
        for path in three:
            path.rename(data / "8" / f"was3-{path.name}")
        for path in eight:
            path.rename(data / "3" / f"was8-{path.name}")
    elif kind == "noise":
        for n in range(150):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / str(n % 10) / f"noise-{n}.png")
            Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(
                data / str(n % 10) / f"grey-{n}.png"
            )
    elif kind == "relabel_known":
        known = [p for p in sorted((data / "1").glob("*.png")) if night_one(p.name, seed)]
        for path in known[:100]:
            path.rename(data / "7" / path.name)
    elif kind == "new_class":
        (data / "x").mkdir()
        for n, source in enumerate(sorted((data / "4").glob("*.png"))[:40]):
            pixels = np.asarray(Image.open(source).convert("L"))
            Image.fromarray(pixels.T[::-1]).save(data / "x" / f"turned-{n}.png")
    elif kind == "vanished_class":
        shutil.rmtree(data / "9")
    elif kind == "brighter":
        for folder in [p for p in data.iterdir() if p.is_dir()]:
            for path in new_files(data, folder.name, seed):
                pixels = np.asarray(Image.open(path).convert("L")).astype(int)
                Image.fromarray(np.clip(pixels + 90, 0, 255).astype(np.uint8)).save(path)
    else:
        raise ValueError(f"unknown kind of trouble {kind!r}; expected one of {', '.join(KINDS)}")


def publish(root: Path, data: Path, epochs: int, seed: int) -> str:
    """Night 1 as the pipeline leaves it: prepared, trained, evaluated, pushed."""
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.push.config import PushConfig
    from components.push.core import run as push
    from components.train.config import TrainConfig
    from components.train.core import run as train

    prepare(PrepareConfig(), str(data), root / "dataset")
    train(
        TrainConfig(epochs=epochs, width=16, early_stopping_patience=epochs, seed=seed),
        root / "dataset",
        root / "model",
    )
    evaluate(
        EvaluateConfig(min_accuracy=0.0), root / "dataset", root / "model", root / "evaluation"
    )
    export = root / "export"
    export.mkdir(exist_ok=True)
    (export / "model.onnx").write_bytes(b"night 1")
    (export / "parity.json").write_text(json.dumps({"onnx": {"passed": True}}))
    push(
        PushConfig(serving="none", registry=str(root / "registry"), version="night1"),
        export,
        root / "evaluation",
        root / "model",
        root / "dataset",
    )
    return str(root / "registry" / "visionpipe-classifier")


def validate_night(folder: Path, data: Path, reference: str, **settings) -> dict:
    """Night 2 prepared with keep_splits on the reference, then validated (warn)."""
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.validate.config import ValidateConfig
    from components.validate.core import run

    prepare(PrepareConfig(keep_splits=reference), str(data), folder / "dataset")
    config = ValidateConfig(on_anomaly="warn", **settings)
    return run(config, folder / "dataset", folder / "validation", reference)


def flagged(result: dict) -> dict[str, list[str]]:
    return {c["check"]: c["anomalies"] for c in result["checks"] if c["verdict"] == "anomaly"}


def gate_clean_night(folder: Path, reference: str, epochs: int, seed: int) -> dict:
    """The clean night-2 dataset trained with another seed, gated on the deployed version."""
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate
    from components.train.config import TrainConfig
    from components.train.core import run as train

    train(
        TrainConfig(epochs=epochs, width=16, early_stopping_patience=epochs, seed=seed),
        folder / "dataset",
        folder / "model",
    )
    # the gate's scheduled settings are EvaluateConfig's defaults (k8s/base/run.yaml)
    config = EvaluateConfig(min_accuracy=0.9, baseline_model=reference)
    found = evaluate(config, folder / "dataset", folder / "model", folder / "evaluation")
    paired = (found["blessing"]["baseline"] or {}).get("paired") or {}
    return {
        "blessed": found["blessing"]["blessed"],
        "reasons": found["blessing"]["reasons"],
        "known_images": paired.get("images"),
        "difference": paired.get("difference"),
        "p_noninferior": paired.get("p_noninferior"),
        "difference_interval": paired.get("difference_interval"),
    }


def one_seed(out: Path, digits_dir: Path, seed: int, epochs: int, kinds) -> dict:
    root = out / f"seed{seed}"
    shutil.rmtree(root, ignore_errors=True)
    reference = publish(
        root / "night1",
        write_night(root / "night1" / "data", digits_dir, everything=False, seed=seed),
        epochs,
        seed,
    )
    clean_dir = root / "clean"
    clean = validate_night(clean_dir, write_night(clean_dir / "data", digits_dir), reference)
    row = {
        "seed": seed,
        "clean_anomalies": clean["anomalies"],
        "gate": gate_clean_night(clean_dir, reference, epochs, seed + 100),
        "caught": {},
    }
    for kind in kinds:
        folder = root / kind
        data = write_night(folder / "data", digits_dir)
        poison(kind, data, seed)
        found = flagged(validate_night(folder, data, reference))
        row["caught"][kind] = {"expected": KINDS[kind] in found, "checks": sorted(found)}
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--out", default="build/nights")
    args = parser.parse_args(argv)
    from components.vision.digits import resolve_builtin

    digits_dir = Path(resolve_builtin("builtin:digits"))
    out = Path(args.out)
    kinds = [k for k in args.kinds.split(",") if k]
    started = time.time()
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(out, digits_dir, seed, args.epochs, kinds))
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "seeds": args.seeds,
        "epochs": args.epochs,
        "false_alarm_nights": sum(bool(r["clean_anomalies"]) for r in rows),
        "clean_nights_refused_by_the_gate": sum(not r["gate"]["blessed"] for r in rows),
        "caught": {k: sum(r["caught"][k]["expected"] for r in rows) for k in kinds},
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
