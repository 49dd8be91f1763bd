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
        serving="visionpipe", registry=str(registry), version="v3", serving_log="gs://b/p"
    )
    run(config, exported, evaluation, model=trained_model, dataset=digits_dataset)
    return registry / "visionpipe-classifier" / "v3"


@pytest.fixture(scope="module")
def pod(published, tmp_path_factory):
    """`visionpipe serve` with the service's own arguments, the model folder in place of
    /mnt/models, loopback in place of 0.0.0.0, and a local log in place of the bucket."""
    service = yaml.safe_load((published / "inferenceservice.yaml").read_text())
    (container,) = service["spec"]["predictor"]["containers"]
    args = list(container["args"])
    args[0] = str(published / "serving" / "visionpipe")
    for flag in ("--host", "--port", "--log", "--log-format"):  # start_server sets these
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
