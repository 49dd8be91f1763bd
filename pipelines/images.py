"""The one place that decides which container images a compiled pipeline's tasks run in.

Resolved each time a pipeline is compiled (`compile`, `submit`, `schedule`,
the CronJob's submit), first match wins:

  1. the cluster settings' `cpu_image` / `gpu_image` (`--cluster FILE`)
  2. `VISIONPIPE_IMAGE` / `VISIONPIPE_GPU_IMAGE` in the environment: the CronJob
     gets them from kustomize's `images:` (k8s/), CI from the digests it pushed
  3. `<VISIONPIPE_REGISTRY or visionpipe>/visionpipe-{cpu,gpu}:<version>`, the tags
     `make images` builds

Training runs in the GPU image when the cluster settings ask for GPUs
(`gpu_count` > 0), in the CPU image otherwise.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import components

# registry/name[:tag][@sha256:digest]: what a pod's `image:` accepts
REFERENCE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


@dataclass(frozen=True)
class StageImages:
    cpu: str
    gpu: str

    def for_task(self, name: str, gpu_count: int, gpu_tasks: tuple[str, ...] = ("train",)) -> str:
        return self.gpu if name in gpu_tasks and gpu_count > 0 else self.cpu


def default_image(flavour: str) -> str:
    registry = os.environ.get("VISIONPIPE_REGISTRY", "visionpipe")
    return f"{registry}/visionpipe-{flavour}:{components.__version__}"


def stage_images(cpu: str = "", gpu: str = "") -> StageImages:
    """The images for one compile: explicit values, then the environment, then the tags."""
    return StageImages(
        cpu=cpu or os.environ.get("VISIONPIPE_IMAGE") or default_image("cpu"),
        gpu=gpu or os.environ.get("VISIONPIPE_GPU_IMAGE") or default_image("gpu"),
    )


def is_reference(value: str) -> bool:
    return bool(REFERENCE.match(value))


def split_reference(reference: str) -> tuple[str, str]:
    """`registry/name@sha256:...` -> (`registry/name`, `sha256:...`)."""
    name, at, digest = reference.partition("@")
    if not at or not digest.startswith("sha256:") or not is_reference(reference):
        raise ValueError(f"{reference!r} is not a digest reference (name@sha256:<64 hex>)")
    return name, digest


def pin_snippet(cpu: str, gpu: str) -> str:
    """What `make push-images` prints for the one place that sets the images: the prod
    overlay's `images:` entries (valid YAML to paste), and as comments the same two
    references for compiling by hand."""
    lines = [
        "# k8s/overlays/prod/kustomization.yaml, replacing its images: entries",
        "images:",
    ]
    for flavour, reference in (("cpu", cpu), ("gpu", gpu)):
        name, digest = split_reference(reference)
        lines += [
            f"  - name: visionpipe/visionpipe-{flavour}",
            f"    newName: {name}",
            f"    digest: {digest}",
        ]
    lines += [
        "# visionpipe compile / submit / schedule by hand (or the cluster file's",
        "# cpu_image / gpu_image):",
        f"# export VISIONPIPE_IMAGE={cpu}",
        f"# export VISIONPIPE_GPU_IMAGE={gpu}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m pipelines.images CPU_REF GPU_REF
    import sys

    try:
        sys.stdout.write(pin_snippet(*sys.argv[1:3]))
    except (TypeError, ValueError) as error:
        sys.exit(
            f"pipelines.images: {error}; usage: python -m pipelines.images CPU@sha256:... "
            "GPU@sha256:..."
        )
