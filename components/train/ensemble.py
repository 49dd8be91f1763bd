"""Ensembles: K members trained apart, averaged in one model (`train.ensemble: K`).

`ensemble_from: seeds` trains every member on the train split with seed + i;
`ensemble_from: kfold` trains member i on the folds of `splits/kfold.csv` (written by
`prepare.kfold: K`) other than i and validates it on fold i. Either way the output is
one Keras model: the members (nested, named member_0..K-1) on a shared input, their
probabilities averaged by a layer named `ensemble_average`. Evaluate, export and push
take it as any model, so every exported format is the averaged graph, verified like
the rest; evaluate also reports each member beside the average.

Each member is a complete model folder under `members/`; a killed ensemble run resumes
with the finished members kept and the running one resumed.

With kfold, every val image trained K-1 members, so the ensemble's val metrics (and the
temperature evaluate fits on val) are optimistic; the test split is untouched.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from components.infra import progress
from components.infra.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.infra.errors import UserError
from components.vision.folds import fold_uris

STAGE = "train"
from components.vision.models import ENSEMBLE_AVERAGE as AVERAGE  # noqa: E402


def kfold_members(dataset: Path, members: int) -> list[tuple[list[str], list[str]]]:
    """(train uris, val uris) per member from splits/kfold.csv."""
    path = dataset / "splits" / "kfold.csv"
    if not path.exists():
        raise UserError(
            f"train.ensemble_from=kfold needs {path}; prepare with prepare.kfold={members}"
        )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    folds = sorted({int(r["fold"]) for r in rows})
    if len(folds) != members:
        raise UserError(
            f"{path} has {len(folds)} folds but train.ensemble={members}; prepare with "
            f"prepare.kfold={members} or set train.ensemble={len(folds)}"
        )
    return fold_uris([r["uri"] for r in rows], [int(r["fold"]) for r in rows])


def average_model(members: list):
    """One model: the members on a shared input (and metadata), probabilities averaged."""
    import keras

    first = members[0]
    inputs = [keras.Input(t.shape[1:], name=t.name.split(":")[0]) for t in first.inputs]
    for index, member in enumerate(members):
        member.name = f"member_{index}"
    feed = inputs[0] if len(inputs) == 1 else inputs
    outputs = [member(feed) for member in members]
    averaged = keras.layers.Average(name=AVERAGE)(outputs)
    return keras.Model(feed, averaged, name=f"ensemble_{len(members)}x_{first.name}")


def run_ensemble(
    config, dataset: Path, output, state_uri: str | None, print_metrics: bool, fit_one,
    identity: str,
) -> dict[str, Any]:  # fmt: skip
    """K members, each `fit_one(config, dataset, folder, ...)` (the train stage's run for one
    model, passed in: this module does not import the stage's core), then averaged. The
    work folder and the finished members are keyed by the config and the dataset's
    `identity`: a rerun with another config or data into the same output trains afresh."""
    from components.train.durable import finished_parts, run_key
    from components.vision import augment
    from components.vision.models import load_model

    record = StageRecord(STAGE, config, {"dataset": str(dataset)})
    k = config.ensemble
    folds = kfold_members(dataset, k) if config.ensemble_from == "kfold" else [None] * k
    key = run_key("ensemble", config, identity)
    finished = finished_parts(state_uri, key)  # members outlive the pod (a gs:// output)
    with atomic_dir(Path(output), resume_key=key) as work:
        member_metrics = []
        for index, fold in enumerate(folds):
            name = f"member_{index}"
            folder = work / "members" / name
            member = config.replace(ensemble=1, seed=config.seed + index)
            done = (folder / "model.keras").exists() and (folder / "metrics.json").exists()
            if done or (finished is not None and finished.fetch(name, folder)):
                progress.log(STAGE, f"ensemble member {index + 1}/{k} already trained")
                member_metrics.append(read_json(folder / "metrics.json"))
                continue
            label = f"fold {index}" if fold else f"seed {member.seed}"
            progress.log(STAGE, f"ensemble member {index + 1}/{k} ({label})")
            member_metrics.append(
                fit_one(
                    member,
                    dataset,
                    folder,
                    state_uri=f"{state_uri}.{name}" if state_uri else None,
                    print_metrics=print_metrics,
                    fold=fold,
                )
            )
            if finished is not None:
                finished.keep(name, folder)
        models = [load_model(work / "members" / f"member_{i}") for i in range(k)]
        model = average_model(models)
        metrics = measure(config, dataset, model, member_metrics, work / "members" / "member_0")
        model.save(work / "model.keras")
        first = work / "members" / "member_0"
        for name in ("classes.json", "metadata.json", "preflight.json", "summary.txt"):
            if (first / name).exists():
                shutil.copy(first / name, work / name)
        write_json(work / "metrics.json", metrics)
        augment.save_policy(work, config.augmentation, config.augmentation_layers)
        record.write(
            work,
            image_size=int(read_json(dataset / "stats.json")["image_size"]),
            classes=read_json(dataset / "classes.json"),
            metrics=metrics,
        )
    if finished is not None:
        finished.clear()
    progress.log(
        STAGE,
        f"ensemble of {k}: val accuracy {metrics['val_accuracy']:.4f} (members "
        + ", ".join(f"{m['val_accuracy']:.4f}" for m in metrics["ensemble"]["members"])
        + f") -> {output}",
    )
    return metrics


def measure(config, dataset: Path, model, member_metrics: list[dict], first: Path) -> dict:
    """The averaged model on the val split, beside each member's own val metrics."""
    from components.train import data
    from components.train.optim import compile_model
    from components.vision import metadata

    stats = read_json(dataset / "stats.json")
    classes = read_json(dataset / "classes.json")
    encoder = metadata.load(first)  # every seed member fitted it on the same train split
    rows = metadata.split_matrix(encoder, dataset, "val") if encoder else None
    val = data.split_dataset(
        dataset,
        "val",
        int(stats["image_size"]),
        len(classes),
        config.batch_size,
        count=stats["counts"]["per_split"]["val"],
        metadata=rows,
    )
    compile_model(model, config, len(classes))
    values = model.evaluate(val, verbose=0, return_dict=True)
    metrics: dict[str, Any] = {f"val_{k}": round(float(v), 6) for k, v in values.items()}
    members = [
        {
            "member": i,
            "val_accuracy": m["val_accuracy"],
            "val_loss": m["val_loss"],
            "epochs_run": m.get("epochs_run"),
        }
        for i, m in enumerate(member_metrics)
    ]
    metrics.update(
        {
            "ensemble": {
                "size": len(members),
                "from": config.ensemble_from,
                "members": members,
                "val_note": (
                    "each member's val metrics are on its own left-out fold; the ensemble's "
                    "on the val split, which K-1 members trained on"
                    if config.ensemble_from == "kfold"
                    else "members and ensemble on the same val split"
                ),
            },
            "best_epoch": None,
            "epochs_run": sum(m.get("epochs_run") or 0 for m in member_metrics),
        }
    )
    return metrics
