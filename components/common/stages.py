"""The stages, in DAG order: the one list every other place derives from.

Each stage is a package `components/<stage>/` with `config.py` (its typed
config class), `core.py` (`run`) and `cli.py` (`add_arguments`, `execute`,
`main`). The pipeline adds one task before them, `fingerprint`, which has no
config and no package.
"""

from __future__ import annotations

import importlib

STAGES = ("prepare", "train", "evaluate", "export", "push")
TASKS = ("fingerprint", *STAGES)  # the pipeline's tasks, in order
# the artifact each stage's task outputs, and the folder `visionpipe run` links it as
OUTPUTS = {
    "prepare": ("dataset", "dataset"),
    "train": ("model", "model"),
    "evaluate": ("evaluation", "evaluation"),
    "export": ("exported", "export"),
    "push": ("published", None),
}
CONFIG_CLASSES = {
    "prepare": "PrepareConfig",
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
