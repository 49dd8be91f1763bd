"""The benchmark scripts stay runnable: each one runs here at tiny sizes.

Numbers from these runs mean nothing; docs/benchmarks.md holds the real ones.
"""

import pytest


@pytest.mark.slow
def test_gpu_train_script_runs_on_cpu_at_tiny_size():
    """gpu_train.py is written for a lent GPU with JAX; on CPU with TensorFlow
    it must still build, train and report a speed-up for every mixed policy."""
    from benchmarks import gpu_train

    out = gpu_train.main(
        [
            "--models",
            "MobileNetV3Small",
            "--size",
            "32",
            "--batch",
            "4",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--policies",
            "float32,mixed_bfloat16",
        ]
    )
    assert [r["policy"] for r in out["results"]] == ["float32", "mixed_bfloat16"]
    assert all(r["images_per_second"] > 0 and r["final_loss_finite"] for r in out["results"])
    assert set(out["speedup_over_float32"]) == {"MobileNetV3Small:mixed_bfloat16"}
