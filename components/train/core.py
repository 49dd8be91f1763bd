"""The train stage: build the model, fit it on the augmented train split, keep the best."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from components.common import progress
from components.common.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.train.config import TrainConfig
from components.train.precision import resolve_policy

STAGE = "train"


def make_optimizer(config: TrainConfig):
    import keras

    rate = config.learning_rate
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    if config.optimizer == "lion":
        return keras.optimizers.Lion(rate, weight_decay=config.weight_decay or None)
    return keras.optimizers.SGD(
        rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None
    )


def compile_model(model, config: TrainConfig, num_classes: int) -> None:
    import keras

    metrics = ["accuracy"]
    if num_classes > 10:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    model.compile(
        optimizer=make_optimizer(config),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=metrics,
    )


def callbacks(config: TrainConfig, work: Path) -> list:
    import keras

    return [
        # CSVLogger before the backup: a kill between the two repeats an epoch's row
        # (read_history keeps the last), never loses one
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
        # double_checkpoint: a kill while the backup is written leaves the previous one
        keras.callbacks.BackupAndRestore(
            str(work / "backup"), delete_checkpoint=True, double_checkpoint=True
        ),
        keras.callbacks.ModelCheckpoint(
            str(work / "checkpoints" / "best.keras"), monitor="val_loss", save_best_only=True
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-6
        ),
        keras.callbacks.TensorBoard(str(work / "tensorboard"), write_graph=False, profile_batch=0),
        keras.callbacks.TerminateOnNaN(),
    ]


def run(config: TrainConfig, dataset: str | Path, output: str | Path) -> dict[str, Any]:
    """Train on the prepared `dataset` folder; write the model folder `output`."""
    import keras

    from components.train import augment, data
    from components.train.models import batchnorm_momentum, build_model

    record = StageRecord(STAGE, config, {"dataset": str(dataset)})
    dataset = Path(dataset)
    output = Path(output)
    stats = read_json(dataset / "stats.json")
    classes = read_json(dataset / "classes.json")
    size, num_classes = int(stats["image_size"]), len(classes)
    keras.utils.set_random_seed(config.seed)
    policy = resolve_policy(config.precision)

    augmenter = augment.build(config.augmentation, config.seed)
    train_ds = data.split_dataset(
        dataset,
        "train",
        size,
        num_classes,
        config.batch_size,
        shuffle_buffer=config.shuffle_buffer,
        augment=augmenter,
        seed=config.seed,
        count=stats["counts"]["per_split"]["train"],
    )
    val_ds = data.split_dataset(
        dataset,
        "val",
        size,
        num_classes,
        config.batch_size,
        count=stats["counts"]["per_split"]["val"],
    )
    n_train = int(stats["counts"]["per_split"]["train"])
    steps_per_epoch = max(1, -(-n_train // config.batch_size))
    # the policy applies to the layers built now; the output layer stays float32
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model(
            config.model,
            size,
            num_classes,
            config.dropout,
            config.weights,
            config.width,
            batchnorm_momentum(steps_per_epoch),
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    compile_model(model, config, num_classes)  # Keras adds loss scaling for mixed_float16
    progress.log(
        STAGE,
        f"{model.name}: {model.count_params():,} weights, input {size}x{size}, "
        f"{num_classes} classes, augmentation {config.augmentation!r}, precision {policy}",
    )

    class_weight = None
    if config.use_class_weights:
        class_weight = {i: float(stats["class_weights"][c]) for i, c in enumerate(classes)}

    # the work folder and its backup outlive a killed run: the same command resumes
    resume_key = hashlib.sha256(
        json.dumps(
            [config.to_dict(), str(dataset.resolve()), stats["counts"]], sort_keys=True
        ).encode()
    ).hexdigest()
    with atomic_dir(output, resume_key=resume_key) as work:
        with progress.step(STAGE, f"fitting up to {config.epochs} epochs"):
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=config.epochs,
                class_weight=class_weight,
                callbacks=callbacks(config, work),
                shuffle=False,  # tf.data shuffles; saying so silences Keras' warning
                verbose=1 if sys.stderr.isatty() else 2,
            )
        # EarlyStopping restored the best epoch's weights; measure them on val once more
        values = model.evaluate(val_ds, verbose=0, return_dict=True)
        metrics = {f"val_{k}": round(float(v), 6) for k, v in values.items()}
        history = read_history(work / "history.csv")
        write_history(work / "history.csv", history)
        best = min(range(len(history)), key=lambda i: history[i]["val_loss"]) if history else 0
        metrics.update({"best_epoch": best + 1, "epochs_run": len(history)})
        model.save(work / "model.keras")
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        write_json(work / "metrics.json", metrics)
        write_json(work / "classes.json", classes)
        plot_history(history, work / "history.png")
        write_augmentation_preview(work / "augmentation_preview.png", dataset, size, augmenter)
        record.write(work, image_size=size, classes=classes, metrics=metrics, precision=policy)
    progress.log(
        STAGE,
        f"best epoch {metrics['best_epoch']}: val accuracy "
        f"{metrics['val_accuracy']:.4f} -> {output}",
    )
    return metrics


def read_history(path: Path) -> list[dict[str, float]]:
    import csv

    if not path.exists():
        return []
    with open(path) as handle:
        rows = [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]
    by_epoch = {int(row["epoch"]): row for row in rows}  # a resumed epoch: keep the last row
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def write_augmentation_preview(
    path: Path, dataset: Path, size: int, augmenter, count: int = 8, variants: int = 3
) -> None:
    """Originals (first row) and augmented versions, so a person can judge the policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from components.common.html import figure_png
    from components.common.records import load_split_arrays

    images, _, _ = load_split_arrays(dataset, "val", size)
    images = images[:count].astype(np.float32)
    rows = [images] + [
        np.asarray(augmenter(images, training=True)) if augmenter is not None else images
        for _ in range(variants)
    ]
    fig, axes = plt.subplots(
        len(rows), len(images), squeeze=False, figsize=(1.3 * len(images), 1.4 * len(rows))
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r][c].imshow(np.clip(image, 0, 255).astype(np.uint8))
            axes[r][c].axis("off")
        axes[r][0].set_title("original" if r == 0 else f"augmented {r}", fontsize=7, loc="left")
    path.write_bytes(figure_png(fig))


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    import csv

    if not history:
        return
    columns = sorted({key for row in history for key in row}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows({**row, "epoch": int(row["epoch"])} for row in history)


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from components.common.html import figure_png

    if not history:
        return
    epochs = [int(h["epoch"]) + 1 for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h.get(metric) for h in history], label=f"train {metric}")
        ax.plot(epochs, [h.get(f"val_{metric}") for h in history], label=f"val {metric}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    path.write_bytes(figure_png(fig))
