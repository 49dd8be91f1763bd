"""The push stage's config."""

from __future__ import annotations

from dataclasses import dataclass

from components.common.config import StageConfig


@dataclass
class PushConfig(StageConfig):
    """Where blessed, verified exports are published."""

    section = "push"

    registry: str = ""  # a folder or gs://bucket/prefix; empty: do not push
    model_name: str = "visionpipe-classifier"
    version: str = ""  # empty: UTC time plus the first 8 hex digits of the ONNX file's hash

    def validate(self) -> None:
        import re

        self.check(
            re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.model_name) is not None,
            "model_name",
            "expected letters, digits, '.', '_' or '-'",
        )
        self.check(
            self.version == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.version),
            "version",
            "expected empty (automatic) or letters, digits, '.', '_' or '-'",
        )
