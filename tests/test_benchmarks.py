"""The benchmark scripts stay runnable: each one runs here at tiny sizes.

Numbers from these runs mean nothing; docs/benchmarks.md holds the real ones.
"""

import pytest


@pytest.mark.slow
def test_gpu_train_script_runs_on_cpu_at_tiny_size():
    """gpu_train.py is written for a lent GPU with JAX; on CPU with TensorFlow
    it must still build, train and report a speed-up for every mixed policy. MobileNet
    (v1) at its smallest input: the cost here is tracing each policy's train step, and its
    plain graph traces in two thirds of MobileNetV3Small's time."""
    from benchmarks import gpu_train

    out = gpu_train.main(
        [
            "--models",
            "MobileNet",
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
    assert set(out["speedup_over_float32"]) == {"MobileNet:mixed_bfloat16"}


@pytest.mark.slow
def test_export_runtimes_script_runs_at_tiny_size():
    """export_runtimes.py measures every CPU runtime of one backbone and reports the goals."""
    from benchmarks import export_runtimes

    (result,) = export_runtimes.main(
        ["--models", "MobileNetV3Small", "--size", "32", "--runs", "3", "--calibration", "4"]
    )
    assert set(result["batch1_median_ms"]) == {
        "keras", "ort_fp32", "ort_int8", "ov_fp32", "ov_int8_nncf", "ov_int8_qdq",
        "ov_fp32_cpu_default",
    }  # fmt: skip
    assert result["onnx_transposes"] <= 2 and result["goal_fastest_vs_keras"] > 0
    assert result["top1_agreement_with_keras_32_images"]["ov_fp32"] == 1.0


@pytest.mark.slow
def test_onnx_transposes_script_reports_a_backbone():
    from benchmarks import onnx_transposes

    (result,) = onnx_transposes.main(["--models", "MobileNetV2", "--size", "32"])
    assert result["transpose"] <= 2 and result["conv"] > 10


@pytest.mark.slow
def test_gradcam_quadrants_script_runs_at_tiny_size():
    from benchmarks import gradcam_quadrants

    out = gradcam_quadrants.main(["--seeds", "1", "--epochs", "1", "--kinds", "position"])
    (row,) = out["results"]
    assert row["test_images"] > 0 and 0 <= row["share"] <= 1 and "position" in out["mean_share"]


@pytest.mark.slow
def test_real_nights_script_runs_at_tiny_size(tmp_path):
    """real_nights.py on the digits: one clean night and one corrupted night against a
    deployed small_cnn of width 4 trained 1 epoch (the checks and the gate need a real
    model, not a good one). Heavy noise on the new images moves their brightness and
    contrast far beyond the threshold whatever the model, so the catch is asserted."""
    from benchmarks import real_nights

    (summary,) = real_nights.main(
        ["--datasets", "digits", "--nights", "1", "--bad", "1", "--kinds", "corrupted",
         "--new", "60", "--epochs", "1", "--width", "4", "--out", str(tmp_path)]
    )  # fmt: skip
    assert summary["clean_nights"] == 1 and summary["refused_by_validate"] in (0, 1)
    assert len(summary["clean_gate_lost_gained"]) == 1
    assert summary["refused_by_the_gate"] == len(summary["gate_causes"])
    assert summary["caught"]["corrupted"]["validate_caught"] == 1
    assert "image_stats" in summary["caught"]["corrupted"]["checks"][0]
