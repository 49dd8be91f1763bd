"""The one error type a user can fix, and how a command line reports it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3  # push: valid input, but the model is not blessed or not verified


class UserError(ValueError):
    """Bad usage or bad input: reported as one line and exit code 2, never a traceback.

    The message says what was wrong, where, and how to fix it.
    """


class PushRefused(RuntimeError):
    """Push declined a model that is not blessed or failed verification: nothing is wrong
    with the input, so not exit 2; one line and exit code 3."""


class StageFailed(RuntimeError):
    """A run failed for a reason already logged in full above; reported as one line, exit 1."""


class VerificationFailed(StageFailed):
    """Valid input, but the result failed a check (an export that does not match Keras):
    one line naming the check and the measured value, exit 1, the evidence kept."""


def exit_on_user_error(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI entry point: `UserError` (and missing files) become one line and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or EXIT_OK
        except (UserError, FileNotFoundError, NotADirectoryError) as error:
            print(f"visionpipe: error: {_one_line(error)}", file=sys.stderr)
            return EXIT_USAGE
        except PushRefused as error:
            print(f"visionpipe: refused: {_one_line(error)}", file=sys.stderr)
            return EXIT_REFUSED
        except StageFailed as error:
            kind = "preempted" if getattr(error, "exit_code", None) else "failed"
            print(f"visionpipe: {kind}: {_one_line(error)}", file=sys.stderr)
            return getattr(error, "exit_code", EXIT_FAILURE)  # 143 after SIGTERM
        except KeyboardInterrupt:
            print("visionpipe: interrupted", file=sys.stderr)
            return 130

    return wrapper


def _one_line(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError) and error.filename and not error.args[1:]:
        return f"file not found: {error.filename}"
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"{error.strerror}: {error.filename}"
    return " ".join(str(error).split())
