"""Progress a person can follow: one timestamped line per step, with its duration."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


def log(stage: str, message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} [{stage}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(stage: str, what: str) -> Iterator[None]:
    """Log `what ...` on entry and `what done in N s` on exit."""
    log(stage, f"{what} ...")
    start = time.perf_counter()
    yield
    log(stage, f"{what} done in {time.perf_counter() - start:.1f} s")


def bar(iterable, total: int | None, stage: str, unit: str):
    """A tqdm progress bar on stderr (plain lines when not a terminal)."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=f"[{stage}]",
        unit=unit,
        file=sys.stderr,
        mininterval=0.5 if interactive else 10.0,
        dynamic_ncols=True,
        leave=interactive,
        disable=not interactive,  # in logs the step lines say enough
    )
