"""What a component body needs around the stage call, and nothing about ML.

A stage that refuses its input raises `UserError`; inside a pipeline task the
message is also written beside the task's outputs (`user_error.txt`), so that
`visionpipe run` can report it as one line with exit code 2 instead of a
generic task failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

USER_ERROR_FILE = "user_error.txt"


@contextlib.contextmanager
def reporting_user_errors(output_path: str | None) -> Iterator[None]:
    """Write a UserError's message beside `output_path` (a task with no output artifact
    passes None: its message is in the task's log only), then re-raise it."""
    from components.common.errors import UserError

    try:
        yield
    except (UserError, FileNotFoundError) as error:
        if output_path is None:
            raise
        task_dir = os.path.dirname(output_path.rstrip("/"))
        if task_dir and not task_dir.startswith("/gcs/") and os.path.isdir(task_dir):
            with open(os.path.join(task_dir, USER_ERROR_FILE), "w") as handle:
                handle.write(" ".join(str(error).split()) + "\n")
        raise
