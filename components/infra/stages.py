"""The stages' names, in DAG order: the one list every other place derives from.

Names only: the shared packages import no stage. Each stage is a package
`components/<stage>/` with `config.py` (its typed config class), `core.py` (`run`) and
`cli.py` (`add_arguments`, `execute`, `main`); `pipelines/stages.py`, a caller of
stages, imports them. The pipeline adds two tasks before them, `fingerprint` and
`changes`, which have no config and no package of their own.
"""

from __future__ import annotations

STAGES = ("prepare", "validate", "train", "evaluate", "export", "push")
# the pipeline's tasks, in order: `changes` decides whether anything changed since the
# deployed version (pipelines/runkey.py); nothing changed, nothing else runs
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
