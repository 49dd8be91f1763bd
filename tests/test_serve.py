"""`visionpipe serve`: a real KServe model server on loopback over the session's `exported`
digits model (no training here), started once for this module from the serving venv.

The served folder is a copy of the export with the reference profile push publishes
(monitor_reference.json, computed on the digits dataset), so answers carry OOD scores."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import VISIONPIPE

ROOT = Path(__file__).resolve().parents[1]
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
pytestmark = pytest.mark.skipif(
    not SERVE_PYTHON.is_file(), reason="the serving venv is missing: run `make serve-venv`"
)


def run_in_serve_venv(script: str, *args: str) -> subprocess.CompletedProcess:
    """`script` in the serving venv, on this checkout's code and nothing of the test's
    environment (serve's dependencies are not the training venv's)."""
    return subprocess.run(
        [str(SERVE_PYTHON), "-c", script, *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def call(url: str, body=None, raw: bytes | None = None, timeout: float = 60):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
            return response.status, (json.loads(text) if text[:1] in b"{[" else text.decode())
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, json.loads(text) if text[:1] == b"{" else text.decode()


def infer_body(blobs: list[bytes]) -> dict:
    return {
        "inputs": [
            {"name": "image", "shape": [len(blobs)], "datatype": "BYTES", "data": [b64(b) for b in blobs]}
        ]
    }  # fmt: skip


@pytest.fixture(scope="module")
def test_images(digits_dataset):
    """The digits test split as the model sees it (uint8, 32x32) and its PNG files' bytes."""
    from components.vision.records import load_split_arrays

    images, _, _ = load_split_arrays(digits_dataset, "test", 32)
    return images, [png(image) for image in images]


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory, exported, digits_dataset) -> Path:
    from components.serve.model import choose_format
    from components.vision import monitoring, targets

    folder = tmp_path_factory.mktemp("served") / "export"
    shutil.copytree(exported, folder, ignore=shutil.ignore_patterns("saved_model", "*.tflite"))
    model_file = folder / targets.FILES[choose_format(str(folder))]
    profile = monitoring.dataset_profile(model_file, digits_dataset, limit=300)
    monitoring.write_profile(profile, folder)
    return folder


def start_server(args: list[str], tmp_path_factory):
    """`visionpipe serve ARGS` (or `visionpipe collect ARGS...` when args[0] is collect) on
    a free loopback port, logging predictions to a temporary folder; yields {"url",
    "infer", "logs"} once it answers, then stops it."""
    port = free_port()
    logs = tmp_path_factory.mktemp("predictions") / "log"
    stderr = logs.parent / "server.log"
    command = args if args[0] == "collect" else ["serve", *args]
    name = args[args.index("--name") + 1] if "--name" in args else ""
    ready = "/stats" if args[0] == "collect" else "/v2/health/ready"
    process = subprocess.Popen(
        [VISIONPIPE, *command, "--port", str(port), "--log", str(logs),
         "--log-flush-seconds", "0.2"],
        stdout=subprocess.DEVNULL, stderr=stderr.open("wb"),  # a file: a pipe would fill up
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if call(url + ready, timeout=2)[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"the server did not start: {stderr.read_text()[-2000:]}")
    yield {"url": url, "infer": f"{url}/v2/models/{name}/infer", "logs": logs}
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def server(served_dir, tmp_path_factory):
    args = [str(served_dir), "--name", "digits", "--top-k", "3", "--max-body-mb", "4"]
    yield from start_server(args, tmp_path_factory)


def test_health_and_metadata_speak_v2(server):
    assert call(server["url"] + "/v2/health/live") == (200, {"live": True})
    status, meta = call(server["url"] + "/v2/models/digits")
    assert status == 200 and meta["name"] == "digits"
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        "image": "BYTES",
        "pixels": "FP32",
    }


def test_top1_equals_predict_on_every_test_image_through_bytes(
    server, served_dir, test_images, tmp_path
):
    """Parity: the whole test split as PNG files, through `predict` and through the server's
    v2 BYTES input (in requests of 32): the same top-1 everywhere, probabilities equal
    within the same runtime's float noise."""
    from components.predict.core import predict_files

    _, blobs = test_images
    status, first = call(server["infer"], infer_body(blobs[:1]))
    assert status == 200, first
    served_file = served_dir / first["parameters"]["file"]
    paths = []
    for n, blob in enumerate(blobs):
        paths.append(tmp_path / f"{n:04d}.png")
        paths[-1].write_bytes(blob)
    expected = predict_files(str(served_file), [str(p) for p in paths], top_k=3)
    for start in range(0, len(blobs), 32):
        status, answer = call(server["infer"], infer_body(blobs[start : start + 32]))
        assert status == 200, answer
        out = {o["name"]: o for o in answer["outputs"]}
        k = out["label"]["shape"][1]
        for i, want in enumerate(expected[start : start + 32]):
            assert out["label"]["data"][i * k] == want["top"][0]["label"], f"image {start + i}"
            got = out["probability"]["data"][i * k]
            assert abs(got - want["top"][0]["probability"]) < 1e-4
        assert answer["model_version"] == "export"
        assert len(out["ood_score"]["data"]) == len(blobs[start : start + 32])


def test_pixels_tensor_and_v1_agree_with_bytes(server, test_images):
    images, blobs = test_images
    tensor = {
        "inputs": [{"name": "pixels", "shape": [4, 32, 32, 3], "datatype": "UINT8",
                    "data": images[:4].ravel().tolist()}]
    }  # fmt: skip
    _, by_tensor = call(server["infer"], tensor)
    _, by_bytes = call(server["infer"], infer_body(blobs[:4]))
    assert by_tensor["outputs"][0]["data"] == by_bytes["outputs"][0]["data"]
    status, v1 = call(
        server["url"] + "/v1/models/digits:predict",
        {"instances": [{"b64": b64(b)} for b in blobs[:4]]},
    )
    assert status == 200 and v1["model_version"] == "export"
    labels = [p["top"][0]["label"] for p in v1["predictions"]]
    assert labels == by_bytes["outputs"][0]["data"][::3]
    assert all(isinstance(p["ood_score"], float) for p in v1["predictions"])


def test_noise_scores_beyond_the_digits_on_validate_s_scale(server, served_dir, test_images):
    """The OOD score is validate's (mean distance to the 5 nearest reference train
    embeddings): random noise pictures score beyond 95% of the reference test images and
    are flagged far more often than real test digits. (The tiny digits CNN pools globally,
    so some noise pictures land near digits: a rate, not every one.)"""
    _, blobs = test_images
    profile = json.loads((served_dir / "monitor_reference.json").read_text())
    rng = np.random.default_rng(0)
    noise = [png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(8)]
    _, answer = call(server["infer"], infer_body(noise + blobs[:32]))
    out = {o["name"]: o["data"] for o in answer["outputs"]}
    scores, far = np.array(out["ood_score"]), np.array(out["out_of_distribution"])
    assert np.median(scores[:8]) > profile["ood_scores"]["quantiles"]["0.95"]
    assert far[:8].mean() >= 0.5 and far[8:].mean() <= 0.1


def truncated_png(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def huge_png() -> bytes:
    """A 50-megapixel PNG: small on the wire (one colour), 150 MB once decoded."""
    buffer = io.BytesIO()
    Image.new("L", (10_000, 5_000)).save(buffer, format="PNG")
    return buffer.getvalue()


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("text", 400, "not an image"),
        ("truncated", 400, "truncated"),
        ("huge", 400, "too large"),
        ("base64", 400, "not valid base64"),
        ("datatype", 400, "datatype INT8"),
        ("shape", 400, "expected [B, 32, 32, 3]"),
        ("two_inputs", 400, "2 inputs"),
        ("metadata", 400, "takes images only"),
        ("body", 413, "request body over"),
    ],
)
def test_bad_requests_get_one_message_are_counted_and_the_next_is_answered(
    server, test_images, case, status, message
):
    _, blobs = test_images
    pixels = {"name": "pixels", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": [0.0] * 3072}
    bodies = {
        "text": infer_body([b"name,label\na.png,3\n"]),
        "truncated": infer_body([truncated_png(blobs[0])]),
        "huge": infer_body([huge_png()]),
        "base64": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%"]}]},
        "datatype": {"inputs": [{**pixels, "datatype": "INT8"}]},
        "shape": {"inputs": [{**pixels, "shape": [1, 28, 28, 3], "data": [0.0] * 2352}]},
        "two_inputs": {"inputs": [pixels, {**pixels, "name": "more"}]},
        "metadata": {**infer_body(blobs[:1]), "parameters": {"metadata": '{"age": "3"}'}},
        "body": infer_body([os.urandom(3 * 2**20)]),  # 4 MB of base64 > --max-body-mb 4
    }  # fmt: skip
    before = metric(server["url"], "visionpipe_rejected_requests_total")
    got, answer = call(server["infer"], bodies[case])
    assert got == status, answer
    assert message in answer["error"], answer
    assert "\n" not in answer["error"]
    assert metric(server["url"], "visionpipe_rejected_requests_total") == before + 1
    assert call(server["infer"], infer_body(blobs[:1]))[0] == 200


def read_records(folder: Path) -> list[dict]:
    return [
        json.loads(line)
        for shard in sorted(folder.rglob("*.jsonl"))
        for line in shard.read_text().splitlines()
    ]


def test_n_requests_leave_n_records_with_every_field(server):
    """Seven requests of one new picture each: seven records in today's shard, each with
    the time, model and version, the image's sha256 and size, top-k, OOD score and the
    fixed-size projection. The writer flushes every 0.2 s: waited for, up to 60 s."""
    import hashlib

    rng = np.random.default_rng(7)
    blobs = [png(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(7)]
    for blob in blobs:
        assert call(server["infer"], infer_body([blob]))[0] == 200
    wanted = {hashlib.sha256(b).hexdigest() for b in blobs}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mine = [r for r in read_records(server["logs"]) if r["sha256"] in wanted]
        if len(mine) >= len(wanted):
            break
        time.sleep(0.2)
    assert len(mine) == 7 and {r["sha256"] for r in mine} == wanted
    for found in mine:
        assert (found["model"], found["version"]) == ("digits", "export")
        assert (found["width"], found["height"]) == (48, 40)
        assert len(found["top"]) == 3 and isinstance(found["ood_score"], float)
        assert len(found["projection"]) == 32
        assert found["out_of_distribution"] is True  # noise
    days = {p.parent.name for p in server["logs"].rglob("*.jsonl")}
    assert all(d.startswith("date=") for d in days)


def test_concurrent_clients_all_get_the_sequential_answer(server, test_images):
    """96 requests from 16 threads at once (loopback, bounded in count): every one is
    answered, with the top-1 the same image gets alone."""
    _, blobs = test_images
    picks = blobs[:24]
    alone = [call(server["infer"], infer_body([b]))[1]["outputs"][0]["data"][0] for b in picks]

    def ask(n: int):
        status, answer = call(server["infer"], infer_body([picks[n % 24]]))
        return n, status, answer["outputs"][0]["data"][0] if status == 200 else answer

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(96)))
    assert [s for _, s, _ in results] == [200] * 96
    assert all(label == alone[n % 24] for n, _, label in results)


def test_the_page_shows_top_k_and_version_in_a_real_browser(server, test_images, tmp_path):
    """Headless Chromium through Selenium (Debian's chromium-driver): open /, choose a
    test digit's PNG in the page's file input (what a drop hands the page too), and the
    page shows the top-3 with probabilities, the same top-1 as the API, and the version."""
    import shutil as which

    driver_path = which.which("chromedriver")
    if driver_path is None or which.which("chromium") is None:
        pytest.skip("no chromium / chromedriver on PATH (`make system-deps`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, blobs = test_images
    picture = tmp_path / "digit.png"
    picture.write_bytes(blobs[5])
    _, expected = call(server["infer"], infer_body([blobs[5]]))
    options = webdriver.ChromeOptions()
    options.binary_location = which.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(server["url"] + "/")
        assert "version" in browser.find_element(By.TAG_NAME, "body").text
        browser.find_element(By.ID, "file").send_keys(str(picture))
        rows = WebDriverWait(browser, 30).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "tr.prediction")
        )
        cells = [row.find_elements(By.TAG_NAME, "td") for row in rows]
        assert len(cells) == 3
        assert cells[0][0].text == expected["outputs"][0]["data"][0]
        assert 0.0 <= float(cells[0][1].text) <= 1.0
        assert "version export" in browser.find_element(By.ID, "status").text
    finally:
        browser.quit()


def test_the_embedding_predictor_answers_as_the_verified_runtime_does(exported, test_images):
    """Every servable format: the probabilities of the file with its embedding output added
    are the runtime's own (the graph is unchanged), and ONNX and OpenVINO read the same
    penultimate embedding width."""
    from components.vision import monitoring, runtimes, targets

    images = test_images[0][:16].astype(np.float32)
    widths = {}
    for fmt in monitoring.SERVABLE:
        path = exported / targets.FILES[fmt]
        plain = (
            runtimes.onnx_predictor(path)
            if path.suffix == ".onnx"
            else runtimes.openvino_predictor(path)
        )
        probs, embeddings = monitoring.embedding_predictor(path)(images)
        assert np.abs(probs - plain(images)).max() < 1e-5, fmt
        widths[fmt] = embeddings.shape
    assert len(set(widths.values())) == 1, widths


@pytest.mark.slow
def test_the_load_benchmark_runs_at_tiny_size(served_dir):
    """benchmarks/serve_load.py end to end at a few requests (numbers mean nothing here;
    docs/benchmarks.md holds the real ones): every request answered, one log record each,
    and the soak mode's bad requests all refused with a 4xx."""
    from benchmarks import serve_load

    found = serve_load.main(
        ["--export", str(served_dir), "--concurrency", "1,2", "--requests", "6", "--images", "4"]
    )
    for level in (1, 2):
        assert {
            found["levels"][level][k]["failed"] for k in ("in_process", "server", "server_logging")
        } == {0}
    assert found["log_records"] == 12
    soaked = serve_load.main(
        ["--export", str(served_dir), "--soak", "3", "--concurrency", "2", "--images", "4"]
    )
    assert soaked["good"] > 0 and soaked["good_failed"] == 0
    assert soaked["bad"] > 0 and soaked["bad_not_4xx"] == 0
