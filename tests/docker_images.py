"""Whether the tests that need a built image may run: the image exists and a Docker
engine answers, or, where .ci/run built the images first (VISIONPIPE_REQUIRE_DOCKER=1), a
missing one fails instead of skipping (test_image, test_serve_image, test_docker_run)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REQUIRED = os.environ.get("VISIONPIPE_REQUIRE_DOCKER") == "1"


def image_problem(image: str, make_target: str) -> str | None:
    """Why `image` cannot be used here (the target that builds it named), or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
    if found.returncode != 0:
        return f"no {image} image (run `make {make_target}`) or no running Docker engine"
    return None


def needs_image(image: str, make_target: str) -> pytest.MarkDecorator:
    """Skip, with the reason, without the image, unless .ci/run requires it."""
    problem = None if REQUIRED else image_problem(image, make_target)
    return pytest.mark.skipif(problem is not None, reason=str(problem))
