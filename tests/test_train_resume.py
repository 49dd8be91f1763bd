"""Training survives SIGKILL: the same command resumes from the last completed epoch."""

import csv
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import VISIONPIPE

pytestmark = pytest.mark.slow


def completed_epochs(history):
    if not history.exists():
        return 0
    with open(history) as handle:
        return len(list(csv.DictReader(handle)))


def test_sigkill_mid_training_then_the_same_command_resumes(tmp_path, digits_dataset):
    out = tmp_path / "model"
    command = [
        VISIONPIPE,
        "train",
        "--dataset",
        str(digits_dataset),
        "--output",
        str(out),
        "--set",
        "epochs=6",
        "--set",
        "width=8",
        "--set",
        "early_stopping_patience=6",
    ]
    partial = tmp_path / ".model.partial"
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 300
    while completed_epochs(partial / "history.csv") < 2:
        assert first.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no epoch completed in 5 minutes"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # no cleanup handler can run
    first.wait()
    assert not out.exists() and (partial / "backup").exists()
    killed_after = completed_epochs(partial / "history.csv")

    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    log = second.stdout + second.stderr
    first_epoch = int(log.split("Epoch ", 1)[1].split("/", 1)[0])
    assert first_epoch == killed_after + 1 or first_epoch == killed_after  # resumed, not 1
    assert first_epoch >= 2
    with open(out / "history.csv") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == list(range(6))  # every epoch once: before and after the kill
    assert not partial.exists() and (out / "model.keras").exists()
