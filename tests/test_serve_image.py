"""The serving image (`make serve-image`, docker/Dockerfile.serve) runs the published
folder as push.serving: visionpipe's InferenceService runs it: the folder at /mnt/models,
`visionpipe serve` with the service's arguments, a read-only root filesystem with /tmp
writable, user 10001, no capabilities. The suite does not build it (too slow for its
budget): .ci/run does, before the tests, and there a missing image fails; elsewhere the
test is skipped, with the reason, when the image or a Docker engine is missing."""

from __future__ import annotations

import subprocess
import time

import pytest

import components
from tests.docker_images import needs_image
from tests.test_serve import call, free_port, infer_body, png, served_dir  # noqa: F401

IMAGE = f"visionpipe/visionpipe-serve:{components.__version__}"


pytestmark = [pytest.mark.slow, needs_image(IMAGE, "serve-image")]


def test_the_image_serves_a_folder_as_the_inference_service_runs_it(served_dir):  # noqa: F811
    import numpy as np

    port = free_port()
    served_dir.chmod(0o755)
    container = subprocess.run(
        ["docker", "run", "-d", "--rm", "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001",
         "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "-p", f"127.0.0.1:{port}:8080",
         "-v", f"{served_dir}:/mnt/models:ro", IMAGE,
         "/mnt/models", "--host", "0.0.0.0", "--port", "8080", "--name", "digits", "--version", "v1"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if call(url + "/v2/health/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        picture = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        status, answer = call(f"{url}/v2/models/digits/infer", infer_body([png(picture)]))
        assert status == 200, answer
        assert answer["model_version"] == "v1"
    finally:
        subprocess.run(["docker", "stop", container], capture_output=True)
