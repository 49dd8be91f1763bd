"""Each stage's config class and command line, imported on demand by name.

The stage list itself is `components/infra/stages.py` (names only); the shared
packages never import a stage, so whatever needs a stage's code lives here, above them.
"""

from __future__ import annotations

import importlib

from components.infra.stages import OUTPUTS, STAGES, TASKS

__all__ = ["CONFIG_CLASSES", "OUTPUTS", "STAGES", "TASKS", "cli_module", "config_class"]

CONFIG_CLASSES = {
    "prepare": "PrepareConfig",
    "validate": "ValidateConfig",
    "train": "TrainConfig",
    "evaluate": "EvaluateConfig",
    "export": "ExportConfig",
    "push": "PushConfig",
}


def config_class(stage: str):
    """The stage's config dataclass, imported on demand (train's imports Keras lazily)."""
    return getattr(importlib.import_module(f"components.{stage}.config"), CONFIG_CLASSES[stage])


def cli_module(stage: str):
    return importlib.import_module(f"components.{stage}.cli")
