"""gs:// sources and registries, through google-cloud-storage against a local emulator server."""

import json

import pytest

from components.common import storage
from components.prepare.config import PrepareConfig
from components.push.config import PushConfig
from tests.conftest import write_digit_images
from tests.test_push import verified  # noqa: F401  (fixture)


def upload_folder(folder, prefix):
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            storage.copy_file(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_storage_round_trip(gcs_emulator):
    storage.write_bytes(f"{gcs_emulator}/rt/a.bin", b"\x00\x01")
    assert storage.read_bytes(f"{gcs_emulator}/rt/a.bin") == b"\x00\x01"
    assert storage.exists(f"{gcs_emulator}/rt/a.bin")
    assert not storage.exists(f"{gcs_emulator}/rt/missing")
    assert list(storage.list_files(f"{gcs_emulator}/rt")) == [f"{gcs_emulator}/rt/a.bin"]


def test_prepare_reads_class_folders_from_a_bucket(tmp_path, gcs_emulator):
    from components.prepare.core import run

    local = write_digit_images(tmp_path / "local", classes=(2, 5), per_class=20)
    upload_folder(local, f"{gcs_emulator}/digits")
    (tmp_path / "junk.png").write_bytes(b"junk")
    storage.copy_file(tmp_path / "junk.png", f"{gcs_emulator}/digits/digit_2/junk.png")
    stats = run(
        PrepareConfig(max_rejected_fraction=0.1), f"{gcs_emulator}/digits", tmp_path / "out"
    )
    assert stats["classes"] == ["digit_2", "digit_5"] and stats["counts"]["total"] == 40
    assert stats["rejected"][0]["uri"] == f"{gcs_emulator}/digits/digit_2/junk.png"
    with open(tmp_path / "out" / "splits" / "train.csv") as handle:
        assert f"{gcs_emulator}/digits/" in handle.read()


def test_push_to_a_bucket(gcs_emulator, verified):  # noqa: F811
    from components.push.core import run

    export, evaluation = verified
    result = run(PushConfig(registry=f"{gcs_emulator}/models", version="v7"), export, evaluation)
    base = f"{gcs_emulator}/models/visionpipe-classifier"
    manifest = json.loads(storage.read_bytes(f"{base}/v7/manifest.json"))
    assert storage.read_bytes(f"{base}/v7/model.onnx") == b"onnx-bytes"
    assert len(manifest["files"]) == 4
    latest = json.loads(storage.read_bytes(f"{base}/latest.json"))
    assert latest == {k: result[k] for k in ("version", "uri", "manifest_sha256")}


@pytest.mark.slow
def test_baseline_model_from_a_bucket(tmp_path, gcs_emulator, digits_dataset, trained_model):
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run

    storage.copy_file(trained_model / "model.keras", f"{gcs_emulator}/deployed/model.keras")
    config = EvaluateConfig(min_accuracy=0.0, baseline_model=f"{gcs_emulator}/deployed")
    result = run(config, digits_dataset, trained_model, tmp_path / "ev")
    assert result["blessing"]["blessed"] is True
    assert result["blessing"]["baseline"]["accuracy"] == result["metrics"]["accuracy"]


class FlakyProxy:
    """An HTTP proxy in front of the emulator that answers some requests with 429 or 503.

    Every `every`-th request is refused before it reaches the emulator, the way
    Cloud Storage sheds load; the client must retry and the work must still succeed.
    """

    def __init__(self, target: str, every: int = 3):
        import http.server
        import threading
        import urllib.request

        self.target, self.every, self.count, self.injected = target, every, 0, []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self):
                proxy.count += 1
                if proxy.count % proxy.every == 0:
                    status = 429 if proxy.count % 2 else 503
                    proxy.injected.append(status)
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                request = urllib.request.Request(
                    proxy.target + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request) as response:
                        status, data, reply = response.status, response.read(), response.headers
                except urllib.error.HTTPError as error:
                    status, data, reply = error.code, error.read(), error.headers
                self.send_response(status)
                for key, value in reply.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_transient_429_and_503_are_retried(tmp_path, gcs_emulator, monkeypatch, verified):  # noqa: F811
    import os

    from components.prepare.core import run as prepare
    from components.push.core import run as push

    local = write_digit_images(tmp_path / "local", classes=(2, 5), per_class=8)
    upload_folder(local, f"{gcs_emulator}/flaky")
    proxy = FlakyProxy(os.environ["STORAGE_EMULATOR_HOST"], every=3)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    storage.gcs_client.cache_clear()
    try:
        # workers=1: every read goes through this process's client and the proxy
        stats = prepare(PrepareConfig(workers=1), f"{gcs_emulator}/flaky", tmp_path / "out")
        export, evaluation = verified
        push(PushConfig(registry=f"{gcs_emulator}/flaky-models", version="v1"), export, evaluation)
        pushed = storage.read_bytes(
            f"{gcs_emulator}/flaky-models/visionpipe-classifier/v1/model.onnx"
        )
    finally:
        proxy.close()
        storage.gcs_client.cache_clear()
    assert stats["counts"]["total"] == 16 and not stats["rejected"]
    assert {429, 503} <= set(proxy.injected) and len(proxy.injected) >= 10
    assert pushed == b"onnx-bytes"


@pytest.mark.slow
def test_stage_commands_read_and_write_bucket_folders(tmp_path, gcs_emulator):
    """prepare -> train -> evaluate with every artifact folder in the bucket (real CLIs)."""
    import subprocess

    from tests.conftest import VISIONPIPE

    data = write_digit_images(tmp_path / "data", classes=(0, 1), per_class=20)
    upload_folder(data, f"{gcs_emulator}/src")
    base = f"{gcs_emulator}/artifacts"
    for command in (
        ["prepare", "--data", f"{gcs_emulator}/src", "--output", f"{base}/dataset"],
        [
            "train",
            "--dataset",
            f"{base}/dataset",
            "--output",
            f"{base}/model",
            "--set",
            "epochs=2",
            "--set",
            "width=4",
        ],
        [
            "evaluate",
            "--dataset",
            f"{base}/dataset",
            "--model",
            f"{base}/model",
            "--output",
            str(tmp_path / "evaluation"),
            "--set",
            "min_accuracy=0",
        ],
    ):
        done = subprocess.run([VISIONPIPE, *command], capture_output=True, text=True)
        assert done.returncode == 0, (command[0], done.stderr[-2000:])
    names = {u.rsplit("/artifacts/", 1)[1] for u in storage.list_files(base)}
    assert {
        "dataset/stats.json",
        "dataset/classes.json",
        "dataset/config.json",
        "model/model.keras",
        "model/config.json",
        "model/history.csv",
    } <= names
    assert any(n.startswith("dataset/tfrecords/train-") for n in names)
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["count"] == 6
    missing = subprocess.run(
        [VISIONPIPE, "train", "--dataset", f"{base}/nothing", "--output", str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "has no config.json" in missing.stderr
