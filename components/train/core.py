"""The train stage: build the model, fit it on the augmented train split, keep the best."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from components.common import metadata, progress, storage
from components.common.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.train.config import TrainConfig
from components.train.precision import resolve_policy

STAGE = "train"


def learning_rate(config: TrainConfig, rate: float, epochs: int, steps_per_epoch: int):
    """A float (plateau: ReduceLROnPlateau adjusts it) or a schedule over optimizer steps."""
    import keras

    if config.lr_schedule == "plateau":
        return rate
    warmup = config.warmup_epochs * steps_per_epoch
    total = max(1, epochs * steps_per_epoch)
    if config.lr_schedule == "constant":
        if not warmup:
            return rate
        return keras.optimizers.schedules.PolynomialDecay(  # linear ramp, then flat
            rate / 100, warmup, end_learning_rate=rate, power=1.0
        )
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(rate, total, alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(
        rate / 100, max(1, total - warmup), alpha=0.01, warmup_target=rate, warmup_steps=warmup
    )


def make_optimizer(config: TrainConfig, rate):
    import keras

    common = {
        "global_clipnorm": config.clip_norm or None,
        "use_ema": config.ema,
        "ema_momentum": config.ema_momentum,
    }
    if config.gradient_accumulation_steps > 1:
        common["gradient_accumulation_steps"] = config.gradient_accumulation_steps
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate, **common)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay, **common)
    if config.optimizer == "lion":
        return keras.optimizers.Lion(rate, weight_decay=config.weight_decay or None, **common)
    return keras.optimizers.SGD(
        rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None, **common
    )


def compile_model(model, config: TrainConfig, num_classes: int, rate=None) -> None:
    import keras

    metrics = ["accuracy"]
    if num_classes > 10:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    model.compile(
        optimizer=make_optimizer(config, config.learning_rate if rate is None else rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=metrics,
    )


def callbacks(
    config: TrainConfig, work: Path, stage: str, best_val_loss: float | None, durable=None
) -> list:
    """The fit's callbacks; `stage` names its backup and best-checkpoint files, and
    `best_val_loss` is the best epoch so far of a resumed stage (None: a fresh one)."""
    import keras

    found = [
        # CSVLogger before the backup: a kill between the two repeats an epoch's row
        # (read_history keeps the last), never loses one
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
        # double_checkpoint: a kill while the backup is written leaves the previous one.
        # Before SwapEMAWeights: the backup holds the raw weights and the optimizer's average
        keras.callbacks.BackupAndRestore(
            str(work / BACKUPS[stage]), delete_checkpoint=True, double_checkpoint=True
        ),
    ]
    if config.ema:
        # validation, the best checkpoint and EarlyStopping see the averaged weights
        found.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    found += [
        # the best epoch's weights, loaded when the stage ends; a file, not memory, so a
        # resumed process still knows the best epoch from before the kill
        keras.callbacks.ModelCheckpoint(
            str(best_checkpoint(work, stage)),
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_val_loss,
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience),
        keras.callbacks.TensorBoard(str(work / "tensorboard"), write_graph=False, profile_batch=0),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.lr_schedule == "plateau":
        found.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-6
            )
        )
    if durable is not None:  # last: it copies what the callbacks above wrote
        from components.train.durable import sync_callback

        found.append(sync_callback(durable, work))
    return found


BACKUPS = {"stage1": "backup", "stage2": "backup_stage2"}


def best_checkpoint(work: Path, stage: str) -> Path:
    return work / "checkpoints" / f"{stage}.best.weights.h5"


def best_so_far(history: list[dict[str, float]], first_epoch: int) -> float | None:
    """The lowest val_loss a resumed stage already reached (epochs from `first_epoch`)."""
    losses = [h["val_loss"] for h in history if h["epoch"] >= first_epoch and "val_loss" in h]
    return min(losses) if losses else None


def dataset_identity(dataset: Path) -> str:
    """What identifies a prepared dataset wherever it was copied to: its split manifests
    (each image's sha256) and stats."""
    digest = hashlib.sha256()
    for path in [dataset / "stats.json", *sorted((dataset / "splits").glob("*.csv"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def distribution_strategy(choice: str):
    """MirroredStrategy over the GPUs (auto: when there are several; mirrored: also over
    several logical CPUs, as the tests do); the default strategy otherwise."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if choice == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if choice == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def make_deterministic(choice: str) -> bool:
    """Op determinism: the same seed gives the same weights, bit for bit (CPU by default)."""
    import tensorflow as tf

    on = choice == "on" or (choice == "auto" and not tf.config.list_physical_devices("GPU"))
    if on:
        tf.config.experimental.enable_op_determinism()
    return on


def run(
    config: TrainConfig,
    dataset: str | Path,
    output: str | Path,
    state_uri: str | None = None,
) -> dict[str, Any]:
    """Train on the prepared `dataset` folder; write the model folder `output`.

    state_uri: the output's durable location (a gs:// artifact URI, or the gs:// output of
    the command); the resumable state is kept beside it, so a fresh process on a fresh
    disk resumes where a killed one stopped (components/train/durable.py).
    """
    import keras

    from components.common import augment
    from components.train import data
    from components.train.models import (
        batchnorm_momentum,
        build_model,
        is_pretrained,
        set_backbone_trainable,
        trainable_count,
    )

    record = StageRecord(STAGE, config, {"dataset": str(dataset)})
    dataset = Path(dataset)
    output = Path(output)
    stats = read_json(dataset / "stats.json")
    classes = read_json(dataset / "classes.json")
    size, num_classes = int(stats["image_size"]), len(classes)
    keras.utils.set_random_seed(config.seed)
    deterministic = make_deterministic(config.deterministic)
    policy = resolve_policy(config.precision)
    strategy = distribution_strategy(config.distribute)

    encoder, train_meta, val_meta = None, None, None
    if config.metadata_columns:
        encoder = metadata.MetadataEncoder.fit(
            metadata.read_rows(dataset, "train"),
            config.metadata_columns,
            where=f"{dataset}/splits/train.csv",
        )
        train_meta = metadata.split_matrix(encoder, dataset, "train")
        val_meta = metadata.split_matrix(encoder, dataset, "val")
    augmenter = augment.build(config.augmentation, config.seed, config.augmentation_layers)
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
        metadata=train_meta,
    )
    val_ds = data.split_dataset(
        dataset,
        "val",
        size,
        num_classes,
        config.batch_size,
        count=stats["counts"]["per_split"]["val"],
        metadata=val_meta,
    )
    n_train = int(stats["counts"]["per_split"]["train"])
    steps_per_epoch = max(1, -(-n_train // config.batch_size))
    two_stage = is_pretrained(config.model, config.weights)
    with strategy.scope():
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
                encoder.size if encoder else 0,
            )
        finally:
            keras.config.set_dtype_policy(previous_policy)
        trainable = {
            "stage1": set_backbone_trainable(model, None) if two_stage else trainable_count(model)
        }
        fitted = model
        teacher_accuracy = None
        if config.teacher:
            from components.train.distill import Distiller, load_teacher

            teacher = load_teacher(config.teacher, size, classes, encoder)
            fitted = Distiller(
                model, teacher, config.distillation_temperature, config.distillation_alpha
            )
            fitted(  # built, as BackupAndRestore needs
                metadata.model_inputs(
                    keras.ops.zeros((1, size, size, 3)),
                    keras.ops.zeros((1, encoder.size)) if encoder else None,
                )
            )
        rate = learning_rate(config, config.learning_rate, config.epochs, steps_per_epoch)
        compile_model(fitted, config, num_classes, rate)  # loss scaling for mixed_float16
    if config.teacher:
        teacher.compile(metrics=["accuracy"], loss="categorical_crossentropy")
        teacher_val = val_ds
        if encoder and not metadata.takes_metadata(teacher):  # an image-only teacher
            teacher_val = val_ds.map(lambda x, y: (x["image"], y))
        teacher_accuracy = float(
            teacher.evaluate(teacher_val, verbose=0, return_dict=True)["accuracy"]
        )
    progress.log(
        STAGE,
        f"{model.name}: {model.count_params():,} weights ({trainable['stage1']:,} trainable), "
        f"input {size}x{size}, {num_classes} classes, augmentation {config.augmentation!r}, "
        f"precision {policy}, {strategy.num_replicas_in_sync} replica(s)"
        + (f", metadata {', '.join(encoder.features)}" if encoder else "")
        + (", backbone frozen for stage 1" if two_stage else "")
        + (f", distilling from {config.teacher}" if config.teacher else ""),
    )

    class_weight = None
    if config.use_class_weights:
        class_weight = {i: float(stats["class_weights"][c]) for i, c in enumerate(classes)}

    def fit(initial_epoch: int, epochs: int, work: Path, stage: str) -> None:
        best = best_so_far(read_history(work / "history.csv"), initial_epoch)
        fitted.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=initial_epoch,
            epochs=epochs,
            class_weight=class_weight,
            callbacks=callbacks(config, work, stage, best, durable),
            shuffle=False,  # tf.data shuffles; saying so silences Keras' warning
            verbose=1 if sys.stderr.isatty() else 2,
        )
        if best_checkpoint(work, stage).exists():  # the best epoch, not the last one
            fitted.load_weights(best_checkpoint(work, stage))

    # the work folder and its backups outlive a killed run: the same command resumes. The
    # key names what determines the result, not where the dataset was copied to
    resume_key = hashlib.sha256(
        json.dumps([config.to_dict(), dataset_identity(dataset)], sort_keys=True).encode()
    ).hexdigest()
    durable = None
    if state_uri and storage.is_gcs(state_uri):
        from components.train.durable import DurableState, state_uri_for

        durable = DurableState(state_uri_for(state_uri), resume_key)
    with atomic_dir(output, resume_key=resume_key) as work:
        if durable is not None and durable.restore(work):
            done = len(read_history(work / "history.csv"))
            progress.log(STAGE, f"resuming from {durable.uri}: {done} epoch(s) already done")
        stage1_done = work / "stage1.json"
        if stage1_done.exists():  # killed during stage 2: stage 1's result is kept
            stage1 = read_json(stage1_done)
            model.load_weights(work / "stage1.weights.h5")
            progress.log(STAGE, f"stage 1 already done ({stage1['epochs_run']} epochs); resuming")
        else:
            label = "fitting the head on the frozen backbone" if two_stage else "fitting"
            with progress.step(STAGE, f"{label}, up to {config.epochs} epochs"):
                fit(0, config.epochs, work, "stage1")
            stage1 = {
                "epochs_run": len(read_history(work / "history.csv")),
                "val_loss": float(fitted.evaluate(val_ds, verbose=0, return_dict=True)["loss"]),
            }
            if config.fine_tune_epochs:
                model.save_weights(work / "stage1.weights.h5")
                write_json(stage1_done, stage1)
                if durable is not None:
                    durable.save(work)
        fine_tune = None
        if config.fine_tune_epochs:
            start = stage1["epochs_run"]
            with strategy.scope():
                trainable["stage2"] = set_backbone_trainable(model, config.fine_tune_layers)
                low = config.learning_rate * config.fine_tune_learning_rate_factor
                rate = learning_rate(config, low, config.fine_tune_epochs, steps_per_epoch)
                compile_model(fitted, config, num_classes, rate)
            progress.log(
                STAGE,
                f"stage 2: {trainable['stage2']:,} trainable weights (BatchNorm frozen), "
                f"learning rate {low:g}",
            )
            with progress.step(STAGE, f"fine-tuning, up to {config.fine_tune_epochs} epochs"):
                fit(start, start + config.fine_tune_epochs, work, "stage2")
            stage2_loss = float(fitted.evaluate(val_ds, verbose=0, return_dict=True)["loss"])
            kept = stage2_loss <= stage1["val_loss"]
            if not kept:  # fine-tuning made it worse on val: keep the frozen-backbone model
                model.load_weights(work / "stage1.weights.h5")
            fine_tune = {
                "start_epoch": start + 1,
                "val_loss_before": round(stage1["val_loss"], 6),
                "val_loss_after": round(stage2_loss, 6),
                "kept": kept,
            }
        # fit() loaded the best epoch's weights; measure them on val once more
        values = fitted.evaluate(val_ds, verbose=0, return_dict=True)
        metrics = {f"val_{k}": round(float(v), 6) for k, v in values.items()}
        history = read_history(work / "history.csv")
        write_history(work / "history.csv", history)
        best = min(range(len(history)), key=lambda i: history[i]["val_loss"]) if history else 0
        metrics.update(
            {
                "best_epoch": best + 1,
                "epochs_run": len(history),
                "trainable_weights": trainable,
                "replicas": strategy.num_replicas_in_sync,
                "deterministic": deterministic,
            }
        )
        if fine_tune:
            metrics["fine_tune"] = fine_tune
        if teacher_accuracy is not None:
            metrics["teacher_val_accuracy"] = round(teacher_accuracy, 6)
        if encoder:
            metrics["metadata_features"] = encoder.features
            encoder.save(work)  # evaluate, export and predict encode with the same statistics
        model.save(work / "model.keras")
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        for leftover in ("stage1.weights.h5", "stage1.json"):
            (work / leftover).unlink(missing_ok=True)
        write_json(work / "metrics.json", metrics)
        write_json(work / "classes.json", classes)
        augment.save_policy(work, config.augmentation, config.augmentation_layers)
        plot_history(history, work / "history.png", fine_tune and fine_tune["start_epoch"])
        write_augmentation_preview(
            work / "augmentation_preview.png", dataset, size, augmenter, num_classes
        )
        record.write(work, image_size=size, classes=classes, metrics=metrics, precision=policy)
    if durable is not None:  # the output is complete: the state has done its job
        durable.clear()
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
    path: Path,
    dataset: Path,
    size: int,
    augmenter,
    num_classes: int,
    count: int = 8,
    variants: int = 3,
) -> None:
    """Originals (first row) and augmented versions, so a person can judge the policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from components.common.html import figure_png
    from components.common.records import load_split_arrays

    images, labels, _ = load_split_arrays(dataset, "val", size)
    images = images[:count].astype(np.float32)
    one_hot = np.eye(num_classes, dtype=np.float32)[labels[:count]]
    rows = [images] + [
        np.asarray(augmenter(images, one_hot)[0]) if augmenter is not None else images
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


def plot_history(
    history: list[dict[str, float]], path: Path, fine_tune_start: int | None = None
) -> None:
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
        if fine_tune_start:
            ax.axvline(fine_tune_start - 0.5, color="grey", linestyle=":", label="fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    path.write_bytes(figure_png(fig))
