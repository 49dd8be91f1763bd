"""Preemption inside the grace period: SIGTERM, and a checkpoint every few minutes of work.

Kubernetes preempts a pod with SIGTERM, then SIGKILL after the grace period (30 s by
default, and on spot nodes). During a fit, `PreemptionGuard`:

- on SIGTERM, at the end of the step in flight: writes the backup (weights with the
  optimizer's state, the epoch and the step: Keras' BackupAndRestore files), syncs the
  durable state (components/train/durable.py), and stops the process with `Preempted`
  (exit 143, 128 + SIGTERM: a task that did not finish must not look finished to KFP,
  whose launcher publishes the outputs of a command that exits 0, so the retry policy
  starts a fresh pod);
- every `train.checkpoint_every` (seconds, minutes or steps of training), does the same
  without stopping, so a SIGKILL loses at most that much training.

Keras 3 (3.15) resumes from the epoch, not the step: BackupAndRestore records the batch
in its metadata but `_load_model` restores only `epoch` (it sets `_initial_epoch`), and
`fit` has no way to start an epoch part-way. A resumed run therefore restarts the
interrupted epoch from its first step, with the weights and optimizer state of the last
checkpoint: what is lost is the training since that checkpoint (at most
`checkpoint_every`), and history.csv still gets each epoch once (its row is written at
the epoch's end).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

from components.infra import progress
from components.infra.errors import StageFailed

EVERY = re.compile(r"^(\d+)(s|m)?$")


class Preempted(StageFailed):
    """SIGTERM during training: the state is saved and synced; a retry resumes from it."""

    exit_code = 143


def parse_every(text: str) -> tuple[int, float]:
    """'300s' / '5m' -> (0 steps, seconds); '200' -> (200 steps, 0); '0' -> (0, 0): off."""
    match = EVERY.match(str(text).strip())
    if not match:
        raise ValueError(text)
    number, unit = int(match[1]), match[2]
    if unit is None:
        return number, 0.0
    return 0, float(number * (60 if unit == "m" else 1))


def guard(backup, work: Path, durable, every: str, stage: str):
    """The Keras callback; `backup` is the fit's BackupAndRestore (its files are what a
    checkpoint writes), `durable` the DurableState or None (a local output)."""
    import keras

    steps_every, seconds_every = parse_every(every)

    class PreemptionGuard(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.signalled = threading.Event()
            self.previous = None
            self.steps = 0
            self.last = time.monotonic()

        def on_train_begin(self, logs=None):
            if threading.current_thread() is threading.main_thread():
                self.previous = signal.signal(signal.SIGTERM, self.on_sigterm)
            self.last = time.monotonic()

        def on_sigterm(self, signum, frame):
            self.signalled.set()  # acted on at the end of the step in flight

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            backup._last_batch_seen = batch  # recorded in the backup's metadata
            now = time.monotonic()
            due = (steps_every and self.steps >= steps_every) or (
                seconds_every and now - self.last >= seconds_every
            )
            if self.signalled.is_set() or due:
                self.checkpoint(batch)
            if self.signalled.is_set():
                raise Preempted(
                    f"SIGTERM during {stage}, epoch {backup._current_epoch + 1}, step "
                    f"{batch + 1}: the state is saved"
                    + (f" and synced to {durable.uri}" if durable is not None else "")
                    + "; the same command (a retried task) resumes from it"
                )

        def checkpoint(self, batch: int) -> None:
            started = time.monotonic()
            backup._save_model()
            if durable is not None:
                durable.save(work)
            self.steps, self.last = 0, time.monotonic()
            progress.log(
                "train",
                f"checkpoint at epoch {backup._current_epoch + 1}, step {batch + 1} "
                f"({time.monotonic() - started:.1f} s)",
            )

        def on_train_end(self, logs=None):
            if self.previous is not None:
                signal.signal(signal.SIGTERM, self.previous)
                self.previous = None

    return PreemptionGuard()
