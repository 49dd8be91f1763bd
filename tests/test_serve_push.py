"""push.serving: visionpipe publishes a folder that `visionpipe serve` runs as KServe's
custom predictor would: the server is started on `<version>/serving/visionpipe` (what the
storage initializer copies to /mnt/models) with the arguments the InferenceService holds.
The session's real digits export is pushed to a folder registry (no training here); no
KServe cluster runs here, so the pod is this local process."""

from __future__ import annotations

import pytest
import yaml

from tests.test_serve import SERVE_PYTHON, call, infer_body, png, start_server

pytestmark = pytest.mark.skipif(
    not SERVE_PYTHON.is_file(), reason="the serving venv is missing: run `make serve-venv`"
)


@pytest.fixture(scope="module")
def published(tmp_path_factory, exported, evaluation, trained_model, digits_dataset):
    from components.push.config import PushConfig
    from components.push.core import run

    registry = tmp_path_factory.mktemp("registry")
    config = PushConfig(
        serving="visionpipe",
        registry=str(registry),
        version="v3",
        serving_log="gs://b/p",
        serving_log_format="parquet",
        serving_log_images=True,
    )
    run(config, exported, evaluation, model=trained_model, dataset=digits_dataset)
    return registry / "visionpipe-classifier" / "v3"


@pytest.fixture(scope="module")
def pod(published, tmp_path_factory):
    """`visionpipe serve` with the service's own arguments (--log-format parquet,
    --log-images), the model folder in place of /mnt/models, loopback in place of
    0.0.0.0, and a local log in place of the bucket."""
    service = yaml.safe_load((published / "inferenceservice.yaml").read_text())
    (container,) = service["spec"]["predictor"]["containers"]
    args = list(container["args"])
    args[0] = str(published / "serving" / "visionpipe")
    assert args[args.index("--log-format") + 1] == "parquet" and "--log-images" in args
    for flag in ("--host", "--port", "--log"):  # start_server sets these
        at = args.index(flag)
        del args[at : at + 2]
    yield from start_server(args, tmp_path_factory)


@pytest.mark.slow
def test_the_published_folder_serves_the_version_with_its_ood_rule(published, pod):
    from sklearn.datasets import load_digits

    from components.push import serving

    service = yaml.safe_load((published / "inferenceservice.yaml").read_text())
    assert serving.validate(service, remote=False) == []
    folder = published / "serving" / "visionpipe"
    env = {e["name"]: e["value"] for e in service["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == str(folder)
    assert (folder / "monitor_reference.json").is_file()
    pixels = (load_digits().images[:4] * 255 / 16).astype("uint8")
    status, answer = call(pod["infer"], infer_body([png(p) for p in pixels]))
    assert status == 200, answer
    assert answer["model_name"] == "visionpipe-classifier" and answer["model_version"] == "v3"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert len(outputs["ood_score"]["data"]) == 4  # the profile push copied beside the file
    served = folder / answer["parameters"]["file"]
    assert served.read_bytes() == (published / served.name).read_bytes()


@pytest.mark.slow
def test_the_service_s_log_keeps_parquet_records_and_the_images(pod):
    """N requests of new pictures: N records in Parquet shards, with every field, and the
    N image files beside them, named by their sha256. The writer flushes every 0.2 s:
    waited for, up to 60 s."""
    import hashlib
    import time

    import numpy as np

    from components.serve.predlog import read_records

    rng = np.random.default_rng(11)
    blobs = [png(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in range(4)]
    for blob in blobs:
        assert call(pod["infer"], infer_body([blob]))[0] == 200
    wanted = {hashlib.sha256(b).hexdigest(): b for b in blobs}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mine = [r for r in read_records(str(pod["logs"])) if r["sha256"] in wanted]
        if len(mine) >= len(wanted):
            break
        time.sleep(0.2)
    assert len(mine) == 4 and not list(pod["logs"].rglob("*.jsonl"))
    for found in mine:
        assert (found["model"], found["version"], found["width"]) == (
            "visionpipe-classifier",
            "v3",
            24,
        )
        assert len(found["projection"]) == 32 and isinstance(found["ood_score"], float)
        image = next(pod["logs"].rglob(found["image"]))
        assert image.read_bytes() == wanted[found["sha256"]]
        assert image.parent == next(pod["logs"].rglob("*.parquet")).parent
