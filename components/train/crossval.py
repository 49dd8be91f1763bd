"""`train.cross_validate: K` (`visionpipe train --cv K`): K-fold cross-validation, then
the model itself.

Fold i is scored on fold i by a model that never saw it, not even to pick its epoch: the
other folds of train+val are split once more (an inner, stratified and group-aware split,
`inner_split`) into images it trains on and images that choose its best epoch (early
stopping, the kept checkpoint). A score from the fold that also chose the epoch would be
the best of several epochs on that fold, biased upwards; this one is not. Every train and
val image is scored on exactly once. The folds are prepare's (`splits/kfold.csv`:
stratified and group-aware, `prepare.kfold: K`); a dataset prepared without them gets the
same kind of folds here (scikit-learn's StratifiedGroupKFold over train+val, seeded by
`train.seed`). Each fold's model is kept under `folds/fold_<i>/` with its history,
`split.json` (the uris it trained on, chose its epoch on and was scored on) and
`score.json`; a killed run resumes with the folds already scored (the work folder is
keyed by the config and the dataset, as a single run's). Reported: each score's mean and
standard deviation over the folds and the per-fold table (`cross_validation.json`, and
`metrics.json`'s `cross_validation`): `val_accuracy` and `val_loss` (log loss) on the held
out fold, `selection_val_accuracy` on the inner split that chose the epoch. The output's
model is then trained as without cross-validation, on train, validated on val: the folds
say how much its val numbers can be trusted.
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
REPORTED = ("val_accuracy", "val_loss", "selection_val_accuracy")
Fold = tuple[list[str], list[str]]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def folds_of(dataset: Path, k: int, seed: int) -> tuple[list[Fold], str, dict[str, dict]]:
    """(train uris, held-out uris) per fold, where the folds came from, and each image's
    manifest row by uri (its label and group, for the inner split)."""
    path = dataset / "splits" / "kfold.csv"
    if path.exists():
        rows = _rows(path)
        if len({r["fold"] for r in rows}) == k:
            folds = [int(r["fold"]) for r in rows]
            return (
                fold_uris([r["uri"] for r in rows], folds),
                f"{path} (prepare.kfold={k})",
                {r["uri"]: r for r in rows},
            )
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
    return fold_uris([r["uri"] for r in rows], folds), source, {r["uri"]: r for r in rows}


def inner_split(train: list[str], rows: dict[str, dict], k: int, seed: int) -> Fold:
    """The fold's training images split once more: (images it trains on, images that choose
    its epoch). Stratified and group-aware like the outer folds (StratifiedGroupKFold with
    max(2, K-1) splits, the first held out), so the epoch is chosen on about one fold's
    worth of images and a group never straddles the two."""
    splits = max(2, k - 1)
    assignment = kfold_assignment(
        [rows[u]["label"] for u in train],
        [rows[u].get("group") or u for u in train],
        splits,
        seed,
        setting="train.cross_validate",
        items="images in the training folds",
        fix=f" (each fold's epoch is chosen on an inner split of {splits}): lower "
        "cross_validate or add images",
    )
    fit = [u for u, part in zip(train, assignment, strict=True) if part != 0]
    select = [u for u, part in zip(train, assignment, strict=True) if part == 0]
    return fit, select


def score_on(folder: Path, dataset: Path, held_out: list[str], batch_size: int) -> dict:
    """The fold model's accuracy and log loss on the held-out fold's images (from the
    train and val shards, only those uris kept in memory)."""
    from sklearn.metrics import log_loss

    from components.vision import runtimes
    from components.vision.models import load_model, metadata_rows
    from components.vision.records import load_split_arrays

    model = load_model(folder)
    size = int(read_json(dataset / "stats.json")["image_size"])
    classes = read_json(dataset / "classes.json")
    wanted, probs, labels = set(held_out), [], []
    for split in ("train", "val"):
        images, split_labels, uris = load_split_arrays(dataset, split, size, keep=wanted)
        if not len(images):
            continue
        _, rows = metadata_rows(model, folder, dataset, {split: uris})
        predictor = runtimes.keras_predictor(model)
        probs.append(runtimes.predict_all(predictor, images, batch_size, rows[split]))
        labels.append(split_labels)
    found, truth = np.concatenate(probs), np.concatenate(labels)
    return {
        "val_accuracy": round(float((found.argmax(1) == truth).mean()), 6),
        "val_loss": round(float(log_loss(truth, found, labels=range(len(classes)))), 6),
        "val_images": int(len(truth)),
    }


def summarize(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (population) standard deviation of each reported score."""
    found: dict[str, Any] = {"folds": len(per_fold), "mean": {}, "std": {}}
    for key in REPORTED:
        values = [float(m[key]) for m in per_fold if key in m]
        if values:
            found["mean"][key] = round(float(np.mean(values)), 6)
            found["std"][key] = round(float(np.std(values)), 6)
    shown = (*REPORTED, "best_epoch", "train_images", "selection_images", "val_images")
    found["per_fold"] = [
        {"fold": i, **{k: m.get(k) for k in shown}} for i, m in enumerate(per_fold)
    ]
    found["scored_on"] = "the held-out fold; each fold's epoch chosen on an inner split"
    return found


def fold_result(
    config, dataset, work, index, fold, rows, finished, fit_one, print_metrics, state_uri
):
    """Fold `index`: trained on its inner split and scored on the held-out fold, or what an
    earlier attempt already scored (the local work folder, or the durable finished parts)."""
    name, k = f"fold_{index}", config.cross_validate
    folder = work / "folds" / name
    if (folder / "score.json").exists() or (
        finished is not None and finished.fetch(name, folder) and (folder / "score.json").exists()
    ):
        progress.log(STAGE, f"cross-validation fold {index + 1}/{k} already scored")
        return read_json(folder / "score.json")
    fit, select = inner_split(fold[0], rows, k, config.seed + index)
    if not (folder / "metrics.json").exists() or not (folder / "model.keras").exists():
        progress.log(
            STAGE,
            f"cross-validation fold {index + 1}/{k}: trains on {len(fit)}, chooses its epoch "
            f"on {len(select)}, is scored on {len(fold[1])} held out",
        )
        fit_one(
            config.replace(cross_validate=0),
            dataset,
            folder,
            state_uri=f"{state_uri}.{name}" if state_uri else None,
            print_metrics=print_metrics,
            fold=(fit, select),
        )
    write_json(folder / "split.json", {"train": fit, "selection": select, "scored": fold[1]})
    metrics = read_json(folder / "metrics.json")
    result = {
        **score_on(folder, dataset, fold[1], config.batch_size),
        "selection_val_accuracy": metrics.get("val_accuracy"),
        "best_epoch": metrics.get("best_epoch"),
        "train_images": len(fit),
        "selection_images": len(select),
    }
    write_json(folder / "score.json", result)  # written last: the fold is done
    (folder / "model.keras").unlink(missing_ok=True)  # the numbers are what is kept
    if finished is not None:
        finished.keep(name, folder)
    return result


def run_cross_validation(
    config, dataset: Path, output, state_uri, print_metrics: bool, fit_one, identity: str
) -> dict[str, Any]:
    """K fold models, then the model itself. `fit_one` is the train stage's run for one
    model and `identity` the dataset's (passed in: this module does not import the core)."""
    k = config.cross_validate
    folds, source, rows = folds_of(dataset, k, config.seed)
    key = run_key("cv-inner", config, identity)  # not the folds of the outer-only scheme
    finished = finished_parts(state_uri, key)  # folds outlive the pod (a gs:// output)
    with atomic_dir(Path(output), resume_key=key) as work:
        per_fold = [
            fold_result(config, dataset, work, i, fold, rows, finished, fit_one,
                        print_metrics, state_uri)
            for i, fold in enumerate(folds)
        ]  # fmt: skip
        report = {"source": source, **summarize(per_fold)}
        write_json(work / "cross_validation.json", report)
        progress.log(
            STAGE,
            f"cross-validation over {k} folds, each scored on a fold that did not choose its "
            f"epoch: val accuracy {report['mean']['val_accuracy']:.4f} +- "
            f"{report['std']['val_accuracy']:.4f} ("
            + ", ".join(f"{m['val_accuracy']:.4f}" for m in per_fold)
            + "); now the model itself",
        )
        metrics = fit_final(config, dataset, work, state_uri, print_metrics, fit_one)
        metrics = {**metrics, "cross_validation": report}
        write_json(work / "metrics.json", metrics)
    if finished is not None:
        finished.clear()
    return metrics


def fit_final(config, dataset, work: Path, state_uri, print_metrics, fit_one) -> dict:
    """The model itself, trained as without cross-validation, moved into the work folder."""
    final = work / "final"
    single = config.replace(cross_validate=0)
    metrics = fit_one(single, dataset, final, state_uri=state_uri, print_metrics=print_metrics)
    for item in final.iterdir():
        target = work / item.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        shutil.move(str(item), target)
    final.rmdir()
    record = read_json(work / "config.json")  # the final fit's, as the one that asked
    record["config"] = config.to_dict()
    write_json(work / "config.json", record)
    return metrics
