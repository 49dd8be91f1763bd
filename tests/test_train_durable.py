"""Preemption-safe training: a fresh process on a fresh disk resumes from durable state.

Two `visionpipe train` processes share nothing but the gs:// URIs (dataset and
output, on the Cloud Storage emulator): each has its own empty HOME, TMPDIR and
working folder, as a retried pod on another node would.
"""

import csv
import io
import json
import os
import signal
import subprocess
import time

import pytest

from components.common import storage
from tests.conftest import VISIONPIPE

pytestmark = pytest.mark.slow


def synced_epochs(state_uri):
    """Epochs in the durable snapshot's history.csv (0 before the first one)."""
    pointer = f"{state_uri}/state.json"
    try:
        if not storage.exists(pointer):
            return 0
        files = json.loads(storage.read_bytes(pointer))["files"]
        if "history.csv" not in files:
            return 0
        text = storage.read_bytes(files["history.csv"]["object"]).decode()
    except Exception:  # a snapshot replaced while it was read: look again
        return 0
    return len(list(csv.DictReader(io.StringIO(text))))


def fresh_env(root, name):
    """An empty HOME, TMPDIR and cwd: nothing from an earlier attempt is on this 'disk'."""
    base = root / name
    for sub in ("home", "tmp", "cwd"):
        (base / sub).mkdir(parents=True)
    env = {**os.environ, "HOME": str(base / "home"), "TMPDIR": str(base / "tmp")}
    env["VISIONPIPE_CACHE"] = str(base / "home" / "cache")
    return env, base / "cwd"


def test_killed_training_resumes_on_a_fresh_disk(tmp_path, gcs_emulator, digits_dataset):
    dataset = f"{gcs_emulator}/durable/dataset"
    storage.upload_tree(digits_dataset, dataset, last=("config.json",))
    output = f"{gcs_emulator}/durable/model"
    command = [
        VISIONPIPE,
        "train",
        "--dataset",
        dataset,
        "--output",
        output,
        "--set",
        "epochs=6",
        "--set",
        "width=8",
        "--set",
        "early_stopping_patience=6",
    ]
    env, cwd = fresh_env(tmp_path, "first")
    first = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        cwd=cwd,
    )
    deadline = time.time() + 400
    while synced_epochs(f"{output}.state") < 3:
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "three epochs did not reach the bucket in time"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # during epoch 4: no cleanup handler runs
    first.wait()
    assert not storage.exists(f"{output}/config.json")  # no output: it was killed

    env, cwd = fresh_env(tmp_path, "second")
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resuming from" in log
    first_epoch = int(log.split("Epoch ", 1)[1].split("/", 1)[0])
    assert first_epoch >= 4, log[-3000:]  # continued, not restarted at epoch 1
    history = storage.read_bytes(f"{output}/history.csv").decode()
    epochs = [int(row["epoch"]) for row in csv.DictReader(io.StringIO(history))]
    assert epochs == list(range(6))  # each epoch exactly once, before and after the kill
    assert storage.exists(f"{output}/model.keras")
    assert list(storage.list_files(f"{output}.state")) == []  # cleared once complete
