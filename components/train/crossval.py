"""`train.cross_validate: K` (`visionpipe train --cv K`): K-fold cross-validation, then
the model itself.

Fold i trains on the other folds of train+val and is measured on fold i, so every
train and val image is validated on exactly once. The folds are prepare's
(`splits/kfold.csv`: stratified and group-aware, `prepare.kfold: K`); a dataset
prepared without them gets the same kind of folds here (scikit-learn's
StratifiedGroupKFold over train+val, seeded by `train.seed`). Each fold's model is
kept under `folds/fold_<i>/` with its history; a killed run resumes with the folds
already done (the work folder is keyed by the config and the dataset, as a single
run's). Reported: each val metric's mean and standard deviation over the folds and
the per-fold table (`cross_validation.json`, and `metrics.json`'s
`cross_validation`). The output's model is then trained as without cross-validation,
on train, validated on val: the folds say how much its val numbers can be trusted.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from components.infra import progress
from components.infra.artifacts import atomic_dir, read_json, write_json
from components.train.durable import finished_parts, run_key
from components.vision.folds import fold_uris, kfold_assignment

STAGE = "train"
REPORTED = ("val_accuracy", "val_loss")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def folds_of(dataset: Path, k: int, seed: int) -> tuple[list[tuple[list[str], list[str]]], str]:
    """(train uris, val uris) per fold, and where the folds came from."""
    path = dataset / "splits" / "kfold.csv"
    if path.exists():
        rows = _rows(path)
        if len({r["fold"] for r in rows}) == k:
            folds = [int(r["fold"]) for r in rows]
            return fold_uris([r["uri"] for r in rows], folds), f"{path} (prepare.kfold={k})"
    rows = _rows(dataset / "splits" / "train.csv") + _rows(dataset / "splits" / "val.csv")
    folds = kfold_assignment(
        [r["label"] for r in rows],
        [r.get("group") or r["uri"] for r in rows],
        k,
        seed,
        setting="train.cross_validate",
        items="train+val images",
        fix=": lower cross_validate",
    )
    source = f"train+val, StratifiedGroupKFold(k={k}, seed={seed})"
    return fold_uris([r["uri"] for r in rows], folds), source


def summarize(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (population) standard deviation of each reported val metric."""
    found: dict[str, Any] = {"folds": len(per_fold), "mean": {}, "std": {}}
    for key in REPORTED:
        values = [float(m[key]) for m in per_fold if key in m]
        if values:
            found["mean"][key] = round(float(np.mean(values)), 6)
            found["std"][key] = round(float(np.std(values)), 6)
    found["per_fold"] = [
        {
            "fold": i,
            **{k: m.get(k) for k in (*REPORTED, "best_epoch", "train_images", "val_images")},
        }
        for i, m in enumerate(per_fold)
    ]
    return found


def run_cross_validation(
    config, dataset: Path, output, state_uri, print_metrics: bool, fit_one, identity: str
) -> dict[str, Any]:
    """K fold models, then the model itself. `fit_one` is the train stage's run for one
    model and `identity` the dataset's (passed in: this module does not import the core)."""
    k = config.cross_validate
    folds, source = folds_of(dataset, k, config.seed)
    key = run_key("cv", config, identity)
    finished = finished_parts(state_uri, key)  # folds outlive the pod (a gs:// output)
    single = config.replace(cross_validate=0)
    with atomic_dir(Path(output), resume_key=key) as work:
        per_fold = []
        for index, fold in enumerate(folds):
            name = f"fold_{index}"
            folder = work / "folds" / name
            trained = False
            if (folder / "metrics.json").exists() or (
                finished is not None and finished.fetch(name, folder)
            ):
                progress.log(STAGE, f"cross-validation fold {index + 1}/{k} already trained")
                metrics = read_json(folder / "metrics.json")
            else:
                progress.log(
                    STAGE, f"cross-validation fold {index + 1}/{k} ({len(fold[1])} held out)"
                )
                trained = True
                metrics = fit_one(
                    single,
                    dataset,
                    folder,
                    state_uri=f"{state_uri}.{name}" if state_uri else None,
                    print_metrics=print_metrics,
                    fold=fold,
                )
            per_fold.append({**metrics, "train_images": len(fold[0]), "val_images": len(fold[1])})
            (folder / "model.keras").unlink(missing_ok=True)  # the numbers are what is kept
            if finished is not None and trained:
                finished.keep(name, folder)
        report = {"source": source, **summarize(per_fold)}
        write_json(work / "cross_validation.json", report)
        progress.log(
            STAGE,
            f"cross-validation over {k} folds: val accuracy {report['mean']['val_accuracy']:.4f}"
            f" +- {report['std']['val_accuracy']:.4f} ("
            + ", ".join(f"{m['val_accuracy']:.4f}" for m in per_fold)
            + "); now the model itself",
        )
        final = work / "final"
        metrics = fit_one(single, dataset, final, state_uri=state_uri, print_metrics=print_metrics)
        for item in final.iterdir():
            target = work / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            shutil.move(str(item), target)
        final.rmdir()
        metrics = {**metrics, "cross_validation": report}
        write_json(work / "metrics.json", metrics)
        record = read_json(work / "config.json")  # the final fit's, as the one that asked
        record["config"] = config.to_dict()
        write_json(work / "config.json", record)
    if finished is not None:
        finished.clear()
    return metrics
