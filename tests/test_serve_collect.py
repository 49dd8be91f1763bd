"""`visionpipe collect`: KServe payload-logger CloudEvents replayed in the form KServe's
agent sends them (pkg/logger/worker.go: the Go CloudEvents SDK in binary mode, `Ce-Id`
the request id, `Ce-Type` org.kubeflow.serving.inference.request/response, the
inferenceservicename/namespace/component/endpoint/metadata extensions, the body as it
was), plus one in structured mode, become prediction records. One receiver for the
module, over the session's real digits export (no training)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request

import numpy as np
import pytest

from tests.test_serve import (  # noqa: F401
    SERVE_PYTHON,
    b64,
    call,
    png,
    run_in_serve_venv,
    served_dir,
    start_server,
)

pytestmark = pytest.mark.skipif(
    not SERVE_PYTHON.is_file(), reason="the serving venv is missing: run `make serve-venv`"
)
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


@pytest.fixture(scope="module")
def collector(served_dir, tmp_path_factory):  # noqa: F811
    yield from start_server(
        ["collect", "--model", str(served_dir), "--log-images"], tmp_path_factory
    )


def send_binary(url: str, event_id: str, kind: str, body: dict) -> tuple[int, dict]:
    headers = {
        "Ce-Id": event_id,
        "Ce-Specversion": "1.0",
        "Ce-Type": kind,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Time": "2026-12-08T01:02:03.456Z",
        "Ce-Inferenceservicename": "digits-isvc",
        "Ce-Namespace": "kubeflow-user",
        "Ce-Component": "predictor",
        "Ce-Endpoint": "digits-isvc-predictor",
        "Ce-Metadata": "{}",
        "Content-Type": "application/json",
    }
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def digits(count: int, seed: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images[seed : seed + count] * 255 / 16
    big = np.kron(images, np.ones((4, 4)))  # 8x8 -> 32x32, the model's size
    return np.repeat(big[..., None], 3, axis=3).astype(np.uint8)


def records(folder) -> list[dict]:
    return [
        json.loads(line)
        for shard in sorted(folder.rglob("*.jsonl"))
        for line in shard.read_text().splitlines()
    ]


def test_replayed_kserve_events_leave_one_record_per_image(collector, served_dir):  # noqa: F811
    url = collector["url"] + "/"
    labels = (served_dir / "labels.txt").read_text().splitlines()
    pictures = digits(5, 0)
    blobs = [png(p) for p in pictures]
    # 1. v2 raw bytes to visionpipe serve, its label/probability answer
    v2 = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(blobs[0])]}]}
    answered = {
        "model_name": "digits", "model_version": "v3",
        "outputs": [
            {"name": "label", "shape": [1, 2], "datatype": "BYTES", "data": ["0", "8"]},
            {"name": "probability", "shape": [1, 2], "datatype": "FP32", "data": [0.9, 0.05]},
        ],
    }  # fmt: skip
    assert send_binary(url, "r-1", REQUEST, v2) == (200, {"records": 0})
    assert send_binary(url, "r-1", RESPONSE, answered) == (200, {"records": 1})
    # 2. a pixel tensor to Triton, its probability tensor; the response comes first
    tensor = {"inputs": [{"name": "image", "shape": [2, 32, 32, 3], "datatype": "FP32",
                          "data": pictures[1:3].astype(float).ravel().tolist()}]}  # fmt: skip
    probs = np.full((2, 10), 0.01)
    probs[0, 1], probs[1, 2] = 0.91, 0.91
    triton = {"model_name": "digits", "model_version": "1", "outputs": [
        {"name": "probabilities", "shape": [2, 10], "datatype": "FP32", "data": probs.ravel().tolist()}
    ]}  # fmt: skip
    assert send_binary(url, "r-2", RESPONSE, triton)[1] == {"records": 0}
    assert send_binary(url, "r-2", REQUEST, tensor)[1] == {"records": 2}
    # 3. v1 b64 in, TF Serving's probability lists out, in structured mode
    for kind, data in (
        (REQUEST, {"instances": [{"b64": b64(b)} for b in blobs[3:5]]}),
        (RESPONSE, {"predictions": probs.tolist()}),
    ):
        event = {"specversion": "1.0", "id": "r-3", "type": kind, "source": "http://x/",
                 "datacontenttype": "application/json", "inferenceservicename": "digits-isvc",
                 "data": data}  # fmt: skip
        request = urllib.request.Request(
            url, json.dumps(event).encode(), {"Content-Type": "application/cloudevents+json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    status, refused = call(url, {"not": "an event"})
    assert status == 400 and "not a CloudEvent" in refused["error"]

    wanted = 5
    deadline = time.monotonic() + 60
    while len(found := records(collector["logs"])) < wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == wanted
    by_hash = {r["sha256"]: r for r in found}
    first = by_hash[hashlib.sha256(blobs[0]).hexdigest()]
    assert first["top"][0] == {"label": "0", "probability": 0.9}
    assert (first["model"], first["version"], first["width"]) == ("digits-isvc", "v3", 32)
    second = by_hash[hashlib.sha256(pictures[1].tobytes()).hexdigest()]
    assert second["top"][0]["label"] == labels[1] and second["version"] == "1"
    assert all(isinstance(r["ood_score"], float) and len(r["projection"]) == 32 for r in found)
    assert by_hash[hashlib.sha256(blobs[4]).hexdigest()]["top"][0]["label"] == labels[2]
    # --log-images: the three image files the logged requests carried, none for tensors
    stored = {p.name: p.read_bytes() for p in collector["logs"].rglob("*.png")}
    assert stored == {hashlib.sha256(b).hexdigest() + ".png": b for b in (blobs[0], *blobs[3:])}
    assert second["image"] is None and first["image"] in stored


def test_healthz_answers_while_the_receiver_can_log(collector):
    """The probe k8s/components/collect gives the Deployment (readiness and liveness)."""
    assert call(collector["url"] + "/healthz") == (200, {"live": True})


def test_healthz_fails_once_the_log_writer_has_stopped(tmp_path):
    """The same app in the serving venv, driven by Starlette's TestClient (no port, no
    model: the probe looks at the writer thread only); the writer is stopped for real."""

    script = (
        "import json, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from components.serve.collect import Collector, app\n"
        "from components.serve.predlog import LogSettings, PredictionLog\n"
        "log = PredictionLog(LogSettings(sys.argv[1]), 'model', '')\n"
        "client = TestClient(app(Collector(log)))\n"
        "before = client.get('/healthz')\n"
        "log.close()\n"
        "after = client.get('/healthz')\n"
        "print(json.dumps([before.status_code, before.json(), after.status_code, after.json()]))\n"
    )
    done = run_in_serve_venv(script, str(tmp_path / "log"))
    assert done.returncode == 0, done.stderr[-2000:]
    before, body_before, after, body_after = json.loads(done.stdout.splitlines()[-1])
    assert (before, body_before) == (200, {"live": True})
    assert after == 503 and "writer thread has stopped" in body_after["error"]
