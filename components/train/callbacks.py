"""The fit's callbacks: history, backup, best checkpoint, early stopping, TensorBoard,
LR reduction, Katib's metrics lines, SWA and the durable-state sync."""

from __future__ import annotations

from pathlib import Path

from components.train.config import TrainConfig


def tensorboard_callback(config, work: Path):
    """Scalars every epoch, weight histograms (train.tensorboard_histograms) and the
    model graph; a profile of train.profile_batches ("start,stop" steps of the first
    epoch; tensorboard-plugin-profile shows it) when asked."""
    import keras

    from components.train.config import profile_range

    profile = profile_range(config.profile_batches)
    return keras.callbacks.TensorBoard(
        str(work / "tensorboard"),
        histogram_freq=1 if config.tensorboard_histograms else 0,
        write_graph=True,
        profile_batch=profile,
    )


def metrics_printer():
    """Each epoch's metrics on stdout as `epoch=N name=value ...` (Katib's StdOut format)."""
    import keras

    def show(epoch: int, logs: dict | None) -> None:
        pairs = " ".join(f"{k}={float(v):.6f}" for k, v in sorted((logs or {}).items()))
        print(f"epoch={epoch + 1} {pairs}", flush=True)

    return keras.callbacks.LambdaCallback(on_epoch_end=show)


def callbacks(
    config: TrainConfig,
    work: Path,
    stage: str,
    best_val_loss: float | None,
    durable=None,
    print_metrics: bool = False,
    extra: list | None = None,
) -> list:
    """The fit's callbacks; `stage` names its backup and best-checkpoint files, and
    `best_val_loss` is the best epoch so far of a resumed stage (None: a fresh one)."""
    import keras

    # double_checkpoint: a kill while the backup is written leaves the previous one.
    # Before SwapEMAWeights: the backup holds the raw weights and the optimizer's average
    backup = keras.callbacks.BackupAndRestore(
        str(work / BACKUPS[stage]), delete_checkpoint=True, double_checkpoint=True
    )
    found = [
        # CSVLogger before the backup: a kill between the two repeats an epoch's row
        # (read_history keeps the last), never loses one
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
        backup,
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
        tensorboard_callback(config, work),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.lr_schedule == "plateau":
        found.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-6
            )
        )
    if print_metrics:
        found.append(metrics_printer())
    found += extra or []  # SWA: saves its running mean in the work folder each epoch
    if durable is not None:  # it copies what the callbacks above wrote
        from components.train.durable import sync_callback

        found.append(sync_callback(durable, work))
    from components.train.preemption import guard

    # last: SIGTERM and train.checkpoint_every write the backup mid-epoch and sync it
    found.append(guard(backup, work, durable, config.checkpoint_every, stage))
    return found


BACKUPS = {"stage1": "backup", "stage2": "backup_stage2"}


def best_checkpoint(work: Path, stage: str) -> Path:
    return work / "checkpoints" / f"{stage}.best.weights.h5"


def best_so_far(history: list[dict[str, float]], first_epoch: int) -> float | None:
    """The lowest val_loss a resumed stage already reached (epochs from `first_epoch`)."""
    losses = [h["val_loss"] for h in history if h["epoch"] >= first_epoch and "val_loss" in h]
    return min(losses) if losses else None
