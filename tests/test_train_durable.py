"""Preemption-safe training: a fresh process on a fresh disk resumes from durable state.

Two `visionpipe train` processes share nothing but the gs:// or s3:// URIs (dataset
and output, on the Cloud Storage emulator or the S3 server): each has its own empty
HOME, TMPDIR and working folder, as a retried pod on another node would.
"""

import csv
import io
import json
import os
import pty
import re
import signal
import subprocess
import time

import pytest

from components.infra import storage
from tests.conftest import VISIONPIPE
from tests.tiny import quick_args, tiny_digits

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


class TimedOutput:
    """A child's output read as it comes (raw chunks: Keras redraws its progress bar with
    carriage returns, not lines), each chunk with the time it arrived. `fd` is a pipe or a
    pseudo-terminal's master side; reading ends when the child closes it."""

    def __init__(self, fd: int):
        import threading

        self.chunks: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self._reader.start()

    def _read(self, fd):
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                data = b""
            if not data:
                break
            self.chunks.append((time.time(), data.decode(errors="replace")))
        os.close(fd)

    def text(self, wait: bool = False) -> str:
        if wait:
            self._reader.join(timeout=10)
        return "".join(chunk for _, chunk in list(self.chunks))

    def steps_into(self, epoch_line: str) -> int:
        """The highest step Keras' progress bar has shown since `epoch_line` (0: none)."""
        text = self.text()
        if epoch_line not in text:
            return 0
        after = text.split(epoch_line, 1)[1]
        return max((int(n) for n in re.findall(r"(\d+)/\d+\x1b\[0m", after)), default=0)


def fresh_env(root, name):
    """An empty HOME, TMPDIR and cwd: nothing from an earlier attempt is on this 'disk'."""
    base = root / name
    for sub in ("home", "tmp", "cwd"):
        (base / sub).mkdir(parents=True)
    env = {**os.environ, "HOME": str(base / "home"), "TMPDIR": str(base / "tmp")}
    env["VISIONPIPE_CACHE"] = str(base / "home" / "cache")
    return env, base / "cwd"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return tiny_digits(tmp_path_factory.mktemp("durable"))


@pytest.mark.parametrize("store", ["gcs_emulator", "s3_server"])
def test_killed_training_resumes_on_a_fresh_disk(tmp_path, store, tiny_dataset, request):
    """On the tiny digits (63 train images at 16 px): what is proved is that a fresh
    process on a fresh disk finds the synced state and continues, which does not depend
    on the data's size. The kill follows the third synced epoch within one 0.1 s poll,
    with three epochs, the final save and its upload still to come."""
    bucket = request.getfixturevalue(store)
    dataset = f"{bucket}/durable/dataset"
    storage.upload_tree(tiny_dataset, dataset, last=("config.json",))
    output = f"{bucket}/durable/model"
    command = [VISIONPIPE, "train", "--dataset", dataset, "--output", output]
    command += quick_args(epochs=6, early_stopping_patience=6)
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
        time.sleep(0.1)
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


def durable_backup_metadata(state_uri):
    """The BackupAndRestore metadata ({"epoch", "batch"}) in the durable snapshot."""
    files = json.loads(storage.read_bytes(f"{state_uri}/state.json"))["files"]
    return json.loads(storage.read_bytes(files["backup/training_metadata.json"]["object"]))


def test_sigterm_mid_epoch_saves_within_the_grace_period_and_resumes(
    tmp_path, gcs_emulator, digits_dataset
):
    """Preemption: SIGTERM in the middle of an epoch ends the process within 30 s, having
    written and synced a checkpoint after the signal; a fresh disk then finishes, each
    epoch once in history.csv.

    Mid-epoch by construction, not by a delay: the child runs on a pseudo-terminal, so
    Keras draws its per-step progress bar, and the signal goes once the bar shows a step
    of epoch 2 done. The guard acts at the end of the step in flight, so the saved step
    is at least 1 (a fixed delay after "Epoch 2" landed on step 0 on a loaded machine).
    The digits' 315 steps of 4 images give epoch 2 about a second of steps left for the
    signal to land in; three epochs are enough to see the resumed run go past the one it
    was stopped in."""
    dataset = f"{gcs_emulator}/sigterm/dataset"
    storage.upload_tree(digits_dataset, dataset, last=("config.json",))
    output = f"{gcs_emulator}/sigterm/model"
    command = [VISIONPIPE, "train", "--dataset", dataset, "--output", output]
    command += quick_args(epochs=3, batch_size=4, early_stopping_patience=3, checkpoint_every=0)
    env, cwd = fresh_env(tmp_path, "first")
    env["PYTHONUNBUFFERED"] = "1"
    main, terminal = pty.openpty()  # isatty(): Keras' per-step progress bar
    first = subprocess.Popen(command, stdout=terminal, stderr=terminal, env=env, cwd=cwd)
    os.close(terminal)
    output_text = TimedOutput(main)
    deadline = time.time() + 400
    # epoch 1 is synced at its end, before epoch 2 starts: both hold once a step shows
    while output_text.steps_into("Epoch 2/3") < 1 or synced_epochs(f"{output}.state") < 1:
        assert first.poll() is None, (first.returncode, output_text.text(wait=True)[-3000:])
        assert time.time() < deadline, "epoch 2 did not start in time"
        time.sleep(0.02)
    signalled = time.time()
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
    elapsed = time.time() - signalled
    text = output_text.text(wait=True)
    print(f"exited {elapsed:.2f} s after SIGTERM")
    assert elapsed < 30, text[-2000:]
    assert first.returncode == 143, text[-3000:]
    assert "visionpipe: preempted: SIGTERM during stage1, epoch 2" in text, text[-3000:]
    saved = durable_backup_metadata(f"{output}.state")
    assert saved["epoch"] == 1 and saved["batch"] > 0  # mid-epoch 2, written after the signal
    assert not storage.exists(f"{output}/config.json")

    env, cwd = fresh_env(tmp_path, "second")
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout + second.stderr
    history = storage.read_bytes(f"{output}/history.csv").decode()
    epochs = [int(row["epoch"]) for row in csv.DictReader(io.StringIO(history))]
    assert epochs == list(range(3))


def test_checkpoint_every_is_validated_and_parsed():
    from components.infra.errors import UserError
    from components.train.config import TrainConfig
    from components.train.preemption import parse_every

    assert parse_every("5m") == (0, 300.0) and parse_every("45s") == (0, 45.0)
    assert parse_every("200") == (200, 0.0) and parse_every("0") == (0, 0.0)
    with pytest.raises(UserError, match="checkpoint_every"):
        TrainConfig.from_dict({"checkpoint_every": "5 minutes"})
