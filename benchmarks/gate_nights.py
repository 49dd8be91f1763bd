"""False refusals and catches of the gate against the deployed version, over many seeds.

    .venv/bin/python benchmarks/gate_nights.py [--seeds 40] [--regimes strong,weak]

Pure statistics on prediction vectors: no Keras. For each seed, the digits
(scikit-learn's 1,797 real images) get a seeded stratified test split of 15% (270
images, ~27 per class). The deployed model and tonight's candidate are real
scikit-learn MLPs trained on two different random 90% subsets of the rest with two
different seeds: the candidate differs from the deployed model by retraining noise
only (new data order, new initialisation), measured, not assumed.

- strong: MLP(32), 200 iterations (~0.97 test accuracy; the pipeline's CNN reaches
  0.97-0.99 on the digits).
- weak: MLP(16), 40 iterations (~0.90; a model this weak churns far more).

Candidates, each through `components.evaluate.gate.decide` (the gate's public
function) with the scheduled settings (EvaluateConfig's defaults = k8s/base/run.yaml):
  must bless: the deployed model itself; the deployed model one image worse; the
  retrained candidate (noise); the retrained candidate one more image worse.
  must refuse: 8 images worse (8 of the deployed model's right answers made wrong);
  8 worse amid the retrain noise; 6 of one class's right answers made wrong (the
  reason must name the class); the same amid noise; 14 lost and 6 gained (churn).
A sweep over max_regression and max_class_regression on the same vectors shows what
the defaults trade. Prints one JSON line per seed and regime, then the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REGIMES = {"strong": ((32,), 200), "weak": ((16,), 40)}
BLESS = ("self", "one_worse", "noise", "noise_one_worse")
REFUSE = ("eight_worse", "eight_worse_noise", "class_six", "class_six_noise", "churn_14_6")


def models(seed: int, regime: str):
    """(labels, deployed predictions, candidate predictions) of two real retrained MLPs."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x / 16.0, y, test_size=0.15, stratify=y, random_state=seed
    )
    hidden, iterations = REGIMES[regime]
    rng = np.random.default_rng(seed)
    predictions = []
    for member in (0, 1):
        keep = rng.choice(len(y_train), int(0.9 * len(y_train)), replace=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the weak regime stops before converging
            model = MLPClassifier(hidden, max_iter=iterations, random_state=seed * 10 + member)
            model.fit(x_train[keep], y_train[keep])
        predictions.append(model.predict(x_test))
    return y_test, predictions[0], predictions[1]


def worsen(predicted, labels, rng, lose: int, gain: int = 0, cls=None, spare=None):
    """`lose` images `predicted` gets right made wrong (of one class when `cls`; only where
    `spare` is also right, so the loss is against the deployed model), `gain` wrong made right."""
    out = predicted.copy()
    right = (predicted == labels) & (spare == labels if spare is not None else True)
    if cls is not None:
        right &= labels == cls
    lost = rng.choice(np.flatnonzero(right), lose, replace=False)
    out[lost] = (labels[lost] + 1 + rng.integers(0, 9, lose)) % 10
    wrong = np.flatnonzero(predicted != labels)
    out[wrong[:gain]] = labels[wrong[:gain]]
    return out


def candidates(labels, deployed, retrained, rng) -> dict:
    right = deployed == labels
    big = [k for k in range(10) if (right & (labels == k)).sum() >= 6]
    both = (retrained == labels) & right
    big_noise = [k for k in range(10) if (both & (labels == k)).sum() >= 6]
    cls, cls_noise = int(rng.choice(big)), int(rng.choice(big_noise))
    gain = min(6, int((~right).sum()))
    return {
        "self": (deployed, None),
        "one_worse": (worsen(deployed, labels, rng, 1), None),
        "noise": (retrained, None),
        "noise_one_worse": (worsen(retrained, labels, rng, 1, spare=deployed), None),
        "eight_worse": (worsen(deployed, labels, rng, 8), None),
        "eight_worse_noise": (worsen(retrained, labels, rng, 8, spare=deployed), None),
        "class_six": (worsen(deployed, labels, rng, 6, cls=cls), str(cls)),
        "class_six_noise": (
            worsen(retrained, labels, rng, 6, cls=cls_noise, spare=deployed),
            str(cls_noise),
        ),  # fmt: skip
        "churn_14_6": (worsen(deployed, labels, rng, 14, gain=gain), None),
    }


def cause(blessing: dict) -> list[str]:
    found = []
    for reason in blessing["reasons"]:
        found.append(
            "class" if reason.startswith("class ") else reason.split(" ", 2)[0].split(":")[0]
        )
    return sorted(set(found))


def one_seed(seed: int, regime: str, settings: dict) -> dict:
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.gate import decide

    labels, deployed, retrained = models(seed, regime)
    rng = np.random.default_rng(1000 + seed)
    uris = [f"test/{i:04d}.png" for i in range(len(labels))]
    classes = [str(k) for k in range(10)]
    built = candidates(labels, deployed, retrained, rng)
    row = {
        "seed": seed,
        "regime": regime,
        "images": len(labels),
        "deployed_accuracy": round(float((deployed == labels).mean()), 4),
        "noise": {
            "lost": int(((deployed == labels) & (retrained != labels)).sum()),
            "gained": int(((retrained == labels) & (deployed != labels)).sum()),
        },
        "results": {},
    }
    for name, config in settings.items():
        config = EvaluateConfig(min_accuracy=0.0, **config)
        found = {}
        for case, (predicted, cls) in built.items():
            blessing = decide(labels, predicted, deployed, uris, classes, config)
            named = cls is None or any(f"class {cls!r}" in r for r in blessing["reasons"])
            found[case] = {"blessed": blessing["blessed"], "cause": cause(blessing),
                           "named": named}  # fmt: skip
        row["results"][name] = found
    return row


def sweep() -> dict:
    """The defaults, and neighbours on each side (max_regression, max_class_regression)."""
    settings = {"defaults": {}}
    for margin in (0.03, 0.05):
        settings[f"max_regression {margin}"] = {"max_regression": margin}
    for drop in (0.1, 0.2):
        settings[f"max_class_regression {drop}"] = {"max_class_regression": drop}
    return settings


def summarise(rows: list[dict], settings: dict) -> None:
    for regime in sorted({r["regime"] for r in rows}):
        mine = [r for r in rows if r["regime"] == regime]
        lost = [r["noise"]["lost"] for r in mine]
        gained = [r["noise"]["gained"] for r in mine]
        accuracy = [r["deployed_accuracy"] for r in mine]
        print(
            f"\n{regime}: {len(mine)} seeds, deployed accuracy {min(accuracy):.3f}-"
            f"{max(accuracy):.3f}; retrain noise lost {min(lost)}-{max(lost)} (mean "
            f"{np.mean(lost):.1f}), gained {min(gained)}-{max(gained)} (mean {np.mean(gained):.1f})"
        )
        print("| setting | " + " | ".join(BLESS + REFUSE) + " |")
        print("|---" * (1 + len(BLESS) + len(REFUSE)) + "|")
        for name in settings:
            cells = []
            for case in BLESS + REFUSE:
                found = [r["results"][name][case] for r in mine]
                blessed = sum(f["blessed"] for f in found)
                if case in BLESS:
                    cells.append(f"{len(found) - blessed}/{len(found)} refused")
                else:
                    named = sum(f["named"] and not f["blessed"] for f in found)
                    extra = f" ({named} named)" if case.startswith("class") else ""
                    cells.append(f"{len(found) - blessed}/{len(found)} caught{extra}")
            print(f"| {name} | " + " | ".join(cells) + " |")
        causes: dict[str, dict[str, int]] = {}
        for r in mine:
            for case, f in r["results"]["defaults"].items():
                for c in f["cause"]:
                    causes.setdefault(case, {}).setdefault(c, 0)
                    causes[case][c] += 1
        print(f"causes with the defaults ({regime}): {json.dumps(causes, sort_keys=True)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--regimes", default="strong,weak")
    args = parser.parse_args()
    settings = sweep()
    started, rows = time.time(), []
    for regime in args.regimes.split(","):
        for seed in range(args.seeds):
            row = one_seed(seed, regime, settings)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("seed", "regime", "deployed_accuracy",
                                                  "noise")}))  # fmt: skip
    summarise(rows, settings)
    print(
        f"\n{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
