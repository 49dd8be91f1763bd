"""The stages, in DAG order: the one list every other place derives from.

Each stage is a package `components/<stage>/` with `config.py` (its typed
config class), `core.py` (`run`) and `cli.py` (`add_arguments`, `execute`,
`main`). The pipeline adds two tasks before them, `fingerprint` and `changes`, which
have no config and no package of their own.
"""

from __future__ import annotations

import importlib

STAGES = ("prepare", "validate", "train", "evaluate", "export", "push")
# the pipeline's tasks, in order: `changes` decides whether anything changed since the
# deployed version (components/common/runkey.py); nothing changed, nothing else runs
TASKS = ("fingerprint", "changes", *STAGES)
# the artifact each stage's task outputs, and the folder `visionpipe run` links it as
OUTPUTS = {
    "prepare": ("dataset", "dataset"),
    "validate": ("validation", "validation"),
    "train": ("model", "model"),
    "evaluate": ("evaluation", "evaluation"),
    "export": ("exported", "export"),
    "push": ("published", None),
}
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
