"""The train stage: build the model, fit it on the augmented train split, keep the best."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.infra import progress
from components.infra.artifacts import StageRecord, atomic_dir, read_json, write_json
from components.train import preflight
from components.train.callbacks import best_checkpoint, best_so_far, callbacks
from components.train.config import TrainConfig
from components.train.history import plot_history, read_history, write_history
from components.train.optim import compile_model, learning_rate
from components.train.precision import resolve_policy
from components.train.preview import write_augmentation_preview
from components.vision import metadata

STAGE = "train"


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


@dataclass
class Session:
    """What the steps of one training run share."""

    config: TrainConfig
    dataset: Path
    stats: dict
    classes: list[str]
    size: int
    policy: str
    strategy: Any
    deterministic: bool
    steps_per_epoch: int
    two_stage: bool
    encoder: Any = None
    augmenter: Any = None
    train_ds: Any = None
    val_ds: Any = None
    val_fit: Any = None  # what the fit validates on: val_ds, class-weighted with class weights
    model: Any = None
    fitted: Any = None  # the model, or the Distiller around it
    teacher: Any = None
    trainable: dict = field(default_factory=dict)
    durable: Any = None
    print_metrics: bool = False
    train_meta: Any = None  # the train split's metadata rows, for SWA's BatchNorm pass
    fold: Any = None  # a k-fold ensemble member: (train uris, val uris) of train+val
    cache: dict = field(default_factory=dict)  # where the decoded splits live, and why
    swa: Any = None  # the SWA callback of the last stage, once it ran

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def run(
    config: TrainConfig,
    dataset: str | Path,
    output: str | Path,
    state_uri: str | None = None,
    print_metrics: bool = False,
    fold: tuple[list[str], list[str]] | None = None,
) -> dict[str, Any]:
    """Train on the prepared `dataset` folder; write the model folder `output`.

    print_metrics: print every epoch's metrics to stdout as `name=value` pairs, the
    format Katib's StdOut metrics collector reads (pipelines/katib.py).

    state_uri: the output's durable location (a gs:// artifact URI, or the gs:// output of
    the command); the resumable state is kept beside it, so a fresh process on a fresh
    disk resumes where a killed one stopped (components/train/durable.py).
    fold: for a k-fold ensemble member, the uris it trains on and validates on.
    With `train.ensemble` K > 1 the K members are trained, then averaged into one model
    (components/train/ensemble.py).
    """
    if config.cross_validate or config.ensemble > 1:
        return run_several(config, Path(dataset), output, state_uri, print_metrics)
    record = StageRecord(STAGE, config, {"dataset": str(dataset)})
    s = start_session(config, Path(dataset))
    s.print_metrics = print_metrics
    if fold is not None:
        s.fold = fold
        s.steps_per_epoch = max(1, -(-len(fold[0]) // config.batch_size))
    make_input_pipelines(s)
    build_and_compile(s)
    teacher_accuracy = measure_teacher(s)
    log_model(s)
    resume_key = resume_key_of(s)
    s.durable = durable_state(state_uri, resume_key)
    with atomic_dir(Path(output), resume_key=resume_key) as work:
        preflight.run(s, work)  # the checklist; a batch that cannot be overfitted stops here
        restore_durable_state(s, work)
        stage1 = fit_stage1(s, work)
        fine_tune = fit_stage2(s, work, stage1) if config.fine_tune_epochs else None
        metrics = final_metrics(s, work, fine_tune, teacher_accuracy)
        save_model_folder(s, work, metrics, fine_tune)
        record.write(
            work,
            image_size=s.size,
            classes=s.classes,
            metrics=metrics,
            precision=s.policy,
            cache={k: v for k, v in s.cache.items() if k in ("mode", "reason", "decoded_bytes")},
        )
    clean_up(s)
    progress.log(
        STAGE,
        f"best epoch {metrics['best_epoch']}: val accuracy "
        f"{metrics['val_accuracy']:.4f} -> {output}",
    )
    return metrics


def clean_up(s: Session) -> None:
    """The disk cache's scratch folder, and the durable state: the output is complete."""
    if s.cache.get("scratch"):
        shutil.rmtree(s.cache["scratch"], ignore_errors=True)
    if s.durable is not None:
        s.durable.clear()


def start_session(config: TrainConfig, dataset: Path) -> Session:
    """Seeds, determinism, the precision policy and the distribution strategy."""
    import keras

    from components.train.models import is_pretrained

    stats = read_json(dataset / "stats.json")
    keras.utils.set_random_seed(config.seed)
    n_train = int(stats["counts"]["per_split"]["train"])
    return Session(
        config=config,
        dataset=dataset,
        stats=stats,
        classes=read_json(dataset / "classes.json"),
        size=int(stats["image_size"]),
        deterministic=make_deterministic(config.deterministic),
        policy=resolve_policy(config.precision),
        strategy=distribution_strategy(config.distribute),
        steps_per_epoch=max(1, -(-n_train // config.batch_size)),
        two_stage=is_pretrained(config.model, config.weights),
    )


def make_input_pipelines(s: Session) -> None:
    """The metadata encoder (fitted on train only), the augmentation, train and val tf.data."""
    from components.train import data
    from components.vision import augment

    config, counts = s.config, s.stats["counts"]["per_split"]
    train_meta = val_meta = None
    if config.metadata_columns:
        s.encoder = metadata.MetadataEncoder.fit(
            metadata.read_rows(s.dataset, "train"),
            config.metadata_columns,
            where=f"{s.dataset}/splits/train.csv",
        )
        train_meta = metadata.split_matrix(s.encoder, s.dataset, "train")
        val_meta = metadata.split_matrix(s.encoder, s.dataset, "val")
    s.train_meta = train_meta
    s.augmenter = augment.build(config.augmentation, config.seed, config.augmentation_layers)
    s.cache = cache_plan(config.cache, s)
    progress.log(STAGE, f"input cache: {s.cache['mode']} ({s.cache['reason']})")
    # a k-fold member trains on its folds of train+val and validates on the one left out
    splits = ("train+val", "train+val") if s.fold else ("train", "val")
    keeps = s.fold or (None, None)
    sizes = (len(s.fold[0]), len(s.fold[1])) if s.fold else (counts["train"], counts["val"])
    s.train_ds = data.split_dataset(
        s.dataset,
        splits[0],
        s.size,
        s.num_classes,
        config.batch_size,
        shuffle_buffer=config.shuffle_buffer,
        augment=s.augmenter,
        seed=config.seed,
        count=sizes[0],
        metadata=train_meta,
        keep=keeps[0],
        cache=s.cache["train"],
    )
    s.val_ds = data.split_dataset(
        s.dataset,
        splits[1],
        s.size,
        s.num_classes,
        config.batch_size,
        count=sizes[1],
        metadata=val_meta,
        keep=keeps[1],
        cache=s.cache["val"],
    )
    s.val_fit = weighted_val(s) if config.use_class_weights else s.val_ds


def class_weights(s: Session) -> dict[int, float]:
    """prepare's per-class weights (stats.json), by class index."""
    return {i: float(s.stats["class_weights"][c]) for i, c in enumerate(s.classes)}


def weighted_val(s: Session):
    """val with each image weighted as the fit weighs its class: the best epoch (and early
    stopping) then follow the loss the fit minimises. Unweighted, a few minority images
    barely move val loss, and the epoch kept undoes the weighting (measured: minority
    recall 0.30 kept where 0.88 was reached). metrics.json stays unweighted."""
    import tensorflow as tf

    table = tf.constant([w for _, w in sorted(class_weights(s).items())], tf.float32)
    return s.val_ds.map(lambda x, y: (x, y, tf.gather(table, tf.argmax(y, axis=-1))))


CACHE_MEMORY_SHARE = 0.25  # of the memory limit, for the decoded train and val splits


def cache_plan(choice: str, s: Session) -> dict[str, Any]:
    """Where tf.data keeps the decoded splits: `train.cache`, or for auto the RAM when
    their decoded size (known from stats.json) fits a quarter of the memory limit, else a
    scratch folder on local disk with room for them, else nowhere."""
    import tempfile

    from components.infra.resources import memory_limit

    counts = s.stats["counts"]["per_split"]
    images = (len(s.fold[0]) + len(s.fold[1])) if s.fold else counts["train"] + counts["val"]
    size = images * s.size * s.size * 3  # uint8 pixels, as the cache holds them
    limit, source = memory_limit()
    mode, reason = choice, f"train.cache={choice}"
    if choice == "auto":
        budget = int(limit * CACHE_MEMORY_SHARE)
        if size <= budget:
            mode = "memory"
            reason = f"{size / 2**20:,.0f} MiB decoded fits {budget / 2**20:,.0f} MiB ({source})"
        else:
            free = shutil.disk_usage(tempfile.gettempdir()).free
            mode = "disk" if size * 1.2 < free else "none"
            reason = (
                f"{size / 2**20:,.0f} MiB decoded exceeds {budget / 2**20:,.0f} MiB "
                f"({source}); {free / 2**20:,.0f} MiB free on local disk"
            )
    plan: dict[str, Any] = {"mode": mode, "reason": reason, "decoded_bytes": size}
    if mode == "disk":
        scratch = tempfile.mkdtemp(prefix="visionpipe-cache-")
        plan.update(scratch=scratch, train=f"{scratch}/train", val=f"{scratch}/val")
    else:
        plan.update(train=mode, val=mode)
    return plan


def build_and_compile(s: Session) -> None:
    """The model under the precision policy (float32 output), stage 1's frozen backbone,
    the Distiller when there is a teacher, compiled for stage 1."""
    import keras

    from components.train.models import (
        batchnorm_momentum,
        build_model,
        set_backbone_trainable,
        trainable_count,
    )

    config = s.config
    with s.strategy.scope():
        # the policy applies to the layers built now; the output layer stays float32
        previous_policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy(s.policy)
        try:
            s.model = build_model(
                config.model,
                s.size,
                s.num_classes,
                config.dropout,
                config.weights,
                config.width,
                batchnorm_momentum(s.steps_per_epoch),
                s.encoder.size if s.encoder else 0,
            )
        finally:
            keras.config.set_dtype_policy(previous_policy)
        frozen = set_backbone_trainable(s.model, None) if s.two_stage else None
        s.trainable = {"stage1": frozen if frozen is not None else trainable_count(s.model)}
        s.fitted = s.model
        if config.teacher:
            from components.train.distill import Distiller, load_teacher

            s.teacher = load_teacher(config.teacher, s.size, s.classes, s.encoder)
            s.fitted = Distiller(
                s.model, s.teacher, config.distillation_temperature, config.distillation_alpha
            )
            s.fitted(  # built, as BackupAndRestore needs
                metadata.model_inputs(
                    keras.ops.zeros((1, s.size, s.size, 3)),
                    keras.ops.zeros((1, s.encoder.size)) if s.encoder else None,
                )
            )
        rate = learning_rate(config, config.learning_rate, config.epochs, s.steps_per_epoch)
        compile_model(s.fitted, config, s.num_classes, rate)  # loss scaling for mixed_float16


def measure_teacher(s: Session) -> float | None:
    """A distillation teacher's own val accuracy (None without one)."""
    if s.teacher is None:
        return None
    s.teacher.compile(metrics=["accuracy"], loss="categorical_crossentropy")
    teacher_val = s.val_ds
    if s.encoder and not metadata.takes_metadata(s.teacher):  # an image-only teacher
        teacher_val = s.val_ds.map(lambda x, y: (x["image"], y))
    return float(s.teacher.evaluate(teacher_val, verbose=0, return_dict=True)["accuracy"])


def log_model(s: Session) -> None:
    config = s.config
    progress.log(
        STAGE,
        f"{s.model.name}: {s.model.count_params():,} weights ({s.trainable['stage1']:,} "
        f"trainable), input {s.size}x{s.size}, {s.num_classes} classes, augmentation "
        f"{config.augmentation!r}, precision {s.policy}, {s.strategy.num_replicas_in_sync} "
        "replica(s)"
        + (f", metadata {', '.join(s.encoder.features)}" if s.encoder else "")
        + (", backbone frozen for stage 1" if s.two_stage else "")
        + (f", distilling from {config.teacher}" if config.teacher else ""),
    )


def run_several(config, dataset: Path, output, state_uri, print_metrics: bool) -> dict:
    """Cross-validation folds then the model (train.cross_validate), or an ensemble's
    members then their average (train.ensemble); each model is this stage's `run`."""
    if config.cross_validate:
        from components.train.crossval import run_cross_validation

        return run_cross_validation(
            config, dataset, output, state_uri, print_metrics, run, dataset_identity(dataset)
        )
    from components.train.ensemble import run_ensemble

    return run_ensemble(
        config, dataset, output, state_uri, print_metrics, run, dataset_identity(dataset)
    )


def resume_key_of(s: Session) -> str:
    """What determines the result (not where the dataset was copied to): a killed run's work
    folder and durable state are used again only by a run with the same key."""
    return hashlib.sha256(
        json.dumps([s.config.to_dict(), dataset_identity(s.dataset)], sort_keys=True).encode()
    ).hexdigest()


def durable_state(state_uri: str | None, resume_key: str):
    """The durable mirror of the work folder; None where the output is not in a bucket."""
    from components.train.durable import DurableState, state_uri_for

    uri = state_uri_for(state_uri)
    return DurableState(uri, resume_key) if uri else None


def restore_durable_state(s: Session, work: Path) -> None:
    if s.durable is not None and s.durable.restore(work):
        done = len(read_history(work / "history.csv"))
        progress.log(STAGE, f"resuming from {s.durable.uri}: {done} epoch(s) already done")


def fit(s: Session, initial_epoch: int, epochs: int, work: Path, stage: str) -> None:
    """One stage's fit, resumable; ends with the stage's best epoch's weights."""
    class_weight = class_weights(s) if s.config.use_class_weights else None
    best = best_so_far(read_history(work / "history.csv"), initial_epoch)
    last_stage = stage == ("stage2" if s.config.fine_tune_epochs else "stage1")
    swa = swa_for(s, work, initial_epoch) if s.config.swa_start and last_stage else None
    s.fitted.fit(
        s.train_ds,
        validation_data=s.val_fit,
        initial_epoch=initial_epoch,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=callbacks(
            s.config, work, stage, best, s.durable, s.print_metrics, [swa] if swa else None
        ),
        shuffle=False,  # tf.data shuffles; saying so silences Keras' warning
        verbose=1 if sys.stderr.isatty() else 2,
    )
    keep_result(s, swa, work, stage)


def keep_result(s: Session, swa, work: Path, stage: str) -> None:
    """What the stage ends with: the SWA average when it averaged anything, else the best
    epoch's weights (early stopping may end the fit before swa_start: that is said)."""
    if swa is not None:
        s.swa = swa
    if swa is not None and swa.epochs:  # the average is the model, not the best epoch
        progress.log(
            STAGE,
            f"SWA: the average of {len(swa.epochs)} epoch(s) ({swa.epochs[0]}..{swa.epochs[-1]})"
            f", BatchNorm re-estimated on {swa.bn_batches} train batches",
        )
        return
    if swa is not None:
        last = len(read_history(work / "history.csv"))
        progress.log(
            STAGE,
            f"SWA averaged nothing: the fit stopped after epoch {last}, before swa_start's "
            f"epoch {swa.start}; the best epoch is kept instead",
        )
    if best_checkpoint(work, stage).exists():  # the best epoch, not the last one
        s.fitted.load_weights(best_checkpoint(work, stage))


def swa_for(s: Session, work: Path, initial_epoch: int):
    """The SWA callback of the last stage: averaging from its swa_start-th epoch, BatchNorm
    re-estimated on the train split without augmentation or shuffling."""
    from components.train import data
    from components.train.swa import swa_callback

    def batches():
        plain = data.split_dataset(
            s.dataset,
            "train+val" if s.fold else "train",
            s.size,
            s.num_classes,
            s.config.batch_size,
            count=len(s.fold[0]) if s.fold else s.stats["counts"]["per_split"]["train"],
            metadata=s.train_meta,
            keep=s.fold[0] if s.fold else None,
        )
        return (x for x, _ in plain)

    return swa_callback(initial_epoch + s.config.swa_start, work, batches, s.model)


def val_loss(s: Session) -> float:
    return float(s.fitted.evaluate(s.val_fit, verbose=0, return_dict=True)["loss"])


def fit_stage1(s: Session, work: Path) -> dict[str, Any]:
    """The whole fit, or the head on the frozen backbone; kept on disk when a stage 2
    follows, so a run killed during stage 2 does not repeat it."""
    done = work / "stage1.json"
    if done.exists():  # killed during stage 2: stage 1's result is kept
        stage1 = read_json(done)
        s.model.load_weights(work / "stage1.weights.h5")
        progress.log(STAGE, f"stage 1 already done ({stage1['epochs_run']} epochs); resuming")
        return stage1
    label = "fitting the head on the frozen backbone" if s.two_stage else "fitting"
    with progress.step(STAGE, f"{label}, up to {s.config.epochs} epochs"):
        fit(s, 0, s.config.epochs, work, "stage1")
    stage1 = {"epochs_run": len(read_history(work / "history.csv")), "val_loss": val_loss(s)}
    if s.config.fine_tune_epochs:
        s.model.save_weights(work / "stage1.weights.h5")
        write_json(done, stage1)
        if s.durable is not None:
            s.durable.save(work)
    return stage1


def fit_stage2(s: Session, work: Path, stage1: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the top layers (BatchNorm frozen) at a lower rate; keep stage 1's model
    when fine-tuning made val worse."""
    from components.train.models import set_backbone_trainable

    config, start = s.config, stage1["epochs_run"]
    low = config.learning_rate * config.fine_tune_learning_rate_factor
    with s.strategy.scope():
        s.trainable["stage2"] = set_backbone_trainable(s.model, config.fine_tune_layers)
        rate = learning_rate(config, low, config.fine_tune_epochs, s.steps_per_epoch)
        compile_model(s.fitted, config, s.num_classes, rate)
    progress.log(
        STAGE,
        f"stage 2: {s.trainable['stage2']:,} trainable weights (BatchNorm frozen), "
        f"learning rate {low:g}",
    )
    with progress.step(STAGE, f"fine-tuning, up to {config.fine_tune_epochs} epochs"):
        fit(s, start, start + config.fine_tune_epochs, work, "stage2")
    stage2_loss = val_loss(s)
    kept = stage2_loss <= stage1["val_loss"]
    if not kept:  # fine-tuning made it worse on val: keep the frozen-backbone model
        s.model.load_weights(work / "stage1.weights.h5")
    return {
        "start_epoch": start + 1,
        "val_loss_before": round(stage1["val_loss"], 6),
        "val_loss_after": round(stage2_loss, 6),
        "kept": kept,
    }


def final_metrics(
    s: Session, work: Path, fine_tune: dict | None, teacher_accuracy: float | None
) -> dict[str, Any]:
    """`metrics.json`: the kept weights measured on val once more, and how they were made;
    history.csv rewritten with each epoch once."""
    values = s.fitted.evaluate(s.val_ds, verbose=0, return_dict=True)
    metrics: dict[str, Any] = {f"val_{k}": round(float(v), 6) for k, v in values.items()}
    history = read_history(work / "history.csv")
    write_history(work / "history.csv", history)
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"]) if history else 0
    metrics.update(
        {
            "best_epoch": best + 1,
            "epochs_run": len(history),
            "trainable_weights": s.trainable,
            "replicas": s.strategy.num_replicas_in_sync,
            "deterministic": s.deterministic,
        }
    )
    if fine_tune:
        metrics["fine_tune"] = fine_tune
    if teacher_accuracy is not None:
        metrics["teacher_val_accuracy"] = round(teacher_accuracy, 6)
    if s.encoder:
        metrics["metadata_features"] = s.encoder.features
    scaling = loss_scaling(s.fitted.optimizer)
    if scaling:
        metrics["loss_scaling"] = scaling
    if s.swa is not None:
        metrics["swa"] = {
            "epochs_averaged": s.swa.epochs,
            "bn_batches": s.swa.bn_batches,
            "kept": "average" if s.swa.epochs else "best epoch (nothing averaged)",
        }
    return metrics


def loss_scaling(optimizer) -> dict[str, Any] | None:
    """mixed_float16's dynamic loss scale (Keras wraps the optimizer at compile), as it
    ended; None when the loss is not scaled (float32, bfloat16)."""
    import keras

    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return None
    return {"dynamic": True, "final_scale": float(optimizer.dynamic_scale)}


def save_model_folder(
    s: Session, work: Path, metrics: dict[str, Any], fine_tune: dict | None
) -> None:
    """The trained model's contract: model.keras, metrics, classes, the augmentation policy,
    the metadata encoder, plots; the resumable state removed."""
    from components.vision import augment

    if s.encoder:
        s.encoder.save(work)  # evaluate, export and predict encode with the same statistics
    s.model.save(work / "model.keras")
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    for leftover in ("stage1.weights.h5", "stage1.json", "swa.npz"):
        (work / leftover).unlink(missing_ok=True)
    write_json(work / "metrics.json", metrics)
    write_json(work / "classes.json", s.classes)
    augment.save_policy(work, s.config.augmentation, s.config.augmentation_layers)
    plot_history(
        read_history(work / "history.csv"),
        work / "history.png",
        fine_tune and fine_tune["start_epoch"],
    )
    write_augmentation_preview(
        work / "augmentation_preview.png", s.dataset, s.size, s.augmenter, s.num_classes
    )
    from components.infra.tensorboard import write_images

    write_images(  # beside the scalars, histograms and graph the callback wrote
        work / "tensorboard" / "images",
        {
            "train/augmentation_preview": work / "augmentation_preview.png",
            "train/history": work / "history.png",
        },
    )
