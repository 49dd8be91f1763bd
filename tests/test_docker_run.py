"""The whole pipeline inside the CPU stage image, with kfp.local.DockerRunner.

Builds the image from this checkout (`make image`; Docker's layer cache makes a
rebuild after a code change take seconds), then `visionpipe run --runner docker`
on the digits. Where no base image can be pulled, the offline base (`make
base-image`: debootstrap + docker import) is built first. Skipped, with the
reason, only when Docker cannot run here: no engine answers (`.ci/run` installs
and starts one), no base image can be pulled or built, or the engine cannot
start a container.
Training runs in the CPU image too (VISIONPIPE_GPU_IMAGE points at it): no GPU here.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import components
from tests.conftest import VISIONPIPE
from tests.docker_images import REQUIRED  # .ci/run (and CI) set it: never skip there

ROOT = Path(__file__).resolve().parent.parent
IMAGE = f"visionpipe/visionpipe-cpu:{components.__version__}"
PUBLIC_BASE = "python:3.11-slim-bookworm"
OFFLINE_BASE = "visionpipe/base:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command on this machine (.ci/run installs docker.io)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        return "the Docker engine does not answer (`docker info` failed; start dockerd)"
    return None


def skip(reason: str):
    if REQUIRED:
        pytest.fail(f"VISIONPIPE_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REQUIRED and docker_problem() is not None, reason=str(docker_problem())),
]


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def make(*args: str) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, (
        f"make {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


@pytest.fixture(scope="session")
def cpu_image() -> str:
    problem = docker_problem()
    if problem is not None:  # only reached with VISIONPIPE_REQUIRE_DOCKER=1: a failure
        skip(problem)
    if image_exists(PUBLIC_BASE):
        base = PUBLIC_BASE
    elif image_exists(OFFLINE_BASE):
        base = OFFLINE_BASE
    else:
        try:
            pulled = subprocess.run(
                ["docker", "pull", PUBLIC_BASE], capture_output=True, timeout=180
            )
            base = PUBLIC_BASE if pulled.returncode == 0 else None
        except subprocess.TimeoutExpired:
            base = None
        if base is None:  # an offline machine: our own debootstrap base
            built = subprocess.run(
                ["make", "--no-print-directory", "base-image"], cwd=ROOT, capture_output=True
            )
            if built.returncode != 0:
                skip(
                    "no base image: none can be pulled and `make base-image` (debootstrap) "
                    f"failed: {built.stderr.decode(errors='replace')[-300:]}"
                )
            base = OFFLINE_BASE
    probe = subprocess.run(["docker", "run", "--rm", base, "true"], capture_output=True)
    if probe.returncode != 0:
        skip(f"the Docker engine cannot start containers here: {probe.stderr[-300:]!r}")
    args = ["image", f"BASE_IMAGE={base}"]
    if os.path.exists(CA_BUNDLE):  # TLS-intercepting proxies; harmless elsewhere
        args.append(f"CA_BUNDLE={CA_BUNDLE}")
    make(*args)
    return IMAGE


def test_whole_pipeline_runs_in_the_image_with_docker_runner(cpu_image, tmp_path):
    revision = subprocess.run(
        ["docker", "image", "inspect", "--format",
         '{{index .Config.Labels "org.opencontainers.image.revision"}}', cpu_image],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert revision == (head or "unknown")  # the image was built from this checkout

    done = subprocess.run(
        [
            VISIONPIPE, "run", "--runner", "docker", "--preset", "smoke",
            "--output", str(tmp_path / "runs"), "--run-id", "in-docker",
        ],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "VISIONPIPE_GPU_IMAGE": cpu_image},
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    # the tasks ran in the image, not this Python (kfp.local says so in the run's logs)
    logs = tmp_path / "runs" / "in-docker" / "logs"
    assert f"Found image '{cpu_image}'" in (logs / "runner.log").read_text()
    assert "[train] epoch" in log and "executor" not in log.lower()
    summary = json.loads((tmp_path / "runs" / "in-docker" / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["blessed"] is True
    assert summary["test_accuracy"] >= 0.9
    stages = {"prepare", "validate", "train", "evaluate", "export", "push", "total"}
    assert set(summary["timings_s"]) == stages
    for key in ("tflite", "onnx", "report", "published"):
        assert summary["artifacts"][key] and Path(summary["artifacts"][key]).exists(), key
    # every format, the optional ones included, converts and verifies in the image (the
    # other whole runs export only the contract's three)
    parity = json.loads((tmp_path / "runs" / "in-docker" / "export" / "parity.json").read_text())
    from components.export.config import FORMATS

    assert set(FORMATS) <= set(parity), sorted(parity)
    # graphviz is in the image: preflight drew the model
    model = tmp_path / "runs" / "in-docker" / "model"
    assert json.loads((model / "preflight.json").read_text())["model"]["plot"] == "model.png"
    assert (model / "model.png").stat().st_size > 1000
    # published to a registry under the pipeline root, where the host can see it
    assert (
        str(tmp_path / "runs" / "in-docker" / "kfp" / "registry")
        in summary["artifacts"]["published"]
    )
