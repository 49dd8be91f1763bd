"""The one place that names the container images the pipeline runs in.

`make images` builds and tags them; `VISIONPIPE_IMAGE` / `VISIONPIPE_GPU_IMAGE`
(or a digest-pinned reference) override the defaults at compile time.
"""

from __future__ import annotations

import os

import components

REGISTRY = os.environ.get("VISIONPIPE_REGISTRY", "visionpipe")
CPU_IMAGE = os.environ.get(
    "VISIONPIPE_IMAGE", f"{REGISTRY}/visionpipe-cpu:{components.__version__}"
)
GPU_IMAGE = os.environ.get(
    "VISIONPIPE_GPU_IMAGE", f"{REGISTRY}/visionpipe-gpu:{components.__version__}"
)
