"""The CPU stage image runs the stages (needs a Docker engine and `make image`; skipped otherwise)."""

import json
import subprocess

import pytest

import components
from tests.docker_images import needs_image

IMAGE = f"visionpipe/visionpipe-cpu:{components.__version__}"


pytestmark = [pytest.mark.slow, needs_image(IMAGE, "image")]


def test_image_labels_user_and_prepare_stage(tmp_path):
    meta = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", IMAGE], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    # numeric, so Kubernetes can check runAsNonRoot; a high UID (Pod Security, checkov)
    assert meta["Config"]["User"] == "10001:10001"
    whoami = subprocess.run(
        ["docker", "run", "--rm", IMAGE, "id", "-un"], capture_output=True, text=True
    )
    assert whoami.stdout.strip() == "visionpipe", whoami.stderr
    assert meta["Config"]["Labels"]["org.opencontainers.image.version"] == components.__version__
    tmp_path.chmod(0o777)
    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-v",
            f"{tmp_path}:/out",
            IMAGE,
            "visionpipe",
            "prepare",
            "--data",
            "builtin:digits",
            "--output",
            "/out/dataset",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((tmp_path / "dataset" / "stats.json").read_text())
    assert stats["counts"]["total"] == 1797
    bad = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            IMAGE,
            "visionpipe",
            "prepare",
            "--data",
            "/nope",
            "--output",
            "/tmp/x",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr
