"""Choosing the floating-point policy: mixed precision where the hardware pays for it."""

from __future__ import annotations


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Compute capability of each visible CUDA GPU (empty on a CPU-only machine)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        if details.get("compute_capability"):
            found.append(tuple(details["compute_capability"]))
    return found


def resolve_policy(requested: str, capabilities: list[tuple[int, int]] | None = None) -> str:
    """`auto`: mixed_float16 when every GPU has Tensor Cores (compute capability >= 7.0),
    else float32. On CPUs float32 stays: bfloat16 measured slower there (docs/benchmarks.md)."""
    if requested != "auto":
        return requested
    if capabilities is None:
        capabilities = gpu_compute_capabilities()
    if capabilities and all(major >= 7 for major, _ in capabilities):
        return "mixed_float16"
    return "float32"
