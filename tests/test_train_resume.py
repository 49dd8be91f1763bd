"""Training survives SIGKILL: the same command resumes from the last completed epoch."""

import csv
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import VISIONPIPE
from tests.tiny import quick_args, tiny_digits

pytestmark = pytest.mark.slow


def completed_epochs(history):
    if not history.exists():
        return 0
    with open(history) as handle:
        return len(list(csv.DictReader(handle)))


def test_sigkill_mid_training_then_the_same_command_resumes(tmp_path):
    """Two real `visionpipe train` processes (the kill and the same command again are what
    is tested) on the tiny digits: what resumes is the epoch count and the saved state,
    which a 63-image epoch has as much as a 1,257-image one. The kill follows the second
    epoch's history row within one 0.05 s poll, while four epochs and the final save are
    still to come, so it always lands before the run could finish."""
    dataset = tiny_digits(tmp_path / "tiny")
    out = tmp_path / "model"
    command = [VISIONPIPE, "train", "--dataset", str(dataset), "--output", str(out)]
    command += quick_args(epochs=6, early_stopping_patience=6)
    partial = tmp_path / ".model.partial"
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 300
    while completed_epochs(partial / "history.csv") < 2:
        assert first.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no epoch completed in 5 minutes"
        time.sleep(0.05)
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
