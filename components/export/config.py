"""The export stage's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from components.infra.config import StageConfig

FORMATS = (
    "saved_model",
    "tflite",
    "tflite_fp16",
    "tflite_dynamic",
    "tflite_int8",
    "onnx",
    "onnx_int8",  # static QDQ int8: faster than fp32 on server CPUs with int8 kernels
    "openvino",  # OpenVINO IR (model.xml/.bin) from the ONNX file, fp32
    "openvino_int8",  # int8 IR: NNCF quantization or the QDQ ONNX, whichever measures better
)
# formats a failed verification drops (export.on_variant_failure: drop) instead of failing
# the export: the quantized ones and the optional fp32 IR. saved_model, tflite and onnx
# are the contract (summary.json's artifacts): a mismatch there always fails.
OPTIONAL = (
    "tflite_fp16",
    "tflite_dynamic",
    "tflite_int8",
    "onnx_int8",
    "openvino",
    "openvino_int8",
)


@dataclass
class ExportConfig(StageConfig):
    """Which formats to write and how strictly they must agree with Keras."""

    section = "export"

    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    onnx_opset: int = 17
    min_float_agreement: float = 0.999  # float32 formats: top-1 agreement with Keras
    # quantized formats (fp16 weights, dynamic int8, full int8) may lose at most 1 point
    max_quantized_accuracy_drop: float = 0.01
    # a quantized or optional format (OPTIONAL) that fails parity: drop it from the export
    # with one line, its numbers kept in parity.json and the model card, and publish the
    # verified float formats; fail: end the stage (exit 1), the evidence kept beside it
    on_variant_failure: Literal["drop", "fail"] = "drop"
    representative_images: int = 256  # train images that calibrate int8 (TFLite and ONNX)
    benchmark_runs: int = 50  # batch-1 latency samples per format
    batch_size: int = 64

    def validate(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        self.check(
            not unknown and bool(self.formats),
            "formats",
            f"expected a non-empty list of {', '.join(FORMATS)}",
        )
        self.check(
            "onnx_int8" not in self.formats or "onnx" in self.formats,
            "formats",
            "onnx_int8 is quantized from the onnx file: list onnx too",
        )
        self.check(
            not {"openvino", "openvino_int8"} & set(self.formats) or "onnx" in self.formats,
            "formats",
            "openvino and openvino_int8 are converted from the onnx file: list onnx too",
        )
        self.check(
            "openvino_int8" not in self.formats or "openvino" in self.formats,
            "formats",
            "openvino_int8 is quantized from the fp32 IR: list openvino too",
        )
        self.check(13 <= self.onnx_opset <= 21, "onnx_opset", "expected 13..21")
        self.check(
            0.0 <= self.min_float_agreement <= 1.0,
            "min_float_agreement",
            "expected a fraction in 0..1",
        )
        self.check(
            0.0 <= self.max_quantized_accuracy_drop <= 1.0,
            "max_quantized_accuracy_drop",
            "expected a fraction in 0..1",
        )
        self.check(self.representative_images >= 1, "representative_images", "expected >= 1")
        self.check(self.benchmark_runs >= 1, "benchmark_runs", "expected >= 1")
        self.check(self.batch_size >= 1, "batch_size", "expected >= 1")
