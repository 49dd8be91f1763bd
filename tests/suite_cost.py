"""Where the suite's time goes, printed at the end of every run (CI logs included).

Beside pytest's `--durations=25`, this says which tests ran a whole pipeline
(a `summary.json` appeared under a folder the test created) or trained a model (a
`history.csv` appeared), how long those took in all, and the suite's own wall time
against its budget (docs/benchmarks.md, "The test suite's budget"). It reads only the
folders created under pytest's base temporary directory while each test ran, so it costs
a directory listing per test; pipelines and trainings run in subprocesses are seen too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

BUDGET_S = 20 * 60  # pytest's share of CI on the 2-core machine (issue 36)
MARKERS = {"summary.json": "whole pipeline", "history.csv": "model training"}

_costs: dict[str, list[tuple[float, str]]] = {kind: [] for kind in MARKERS.values()}
_started = time.monotonic()


def _entries(base: Path) -> set[str]:
    try:
        return set(os.listdir(base))
    except OSError:
        return set()


def _found(folder: Path) -> set[str]:
    kinds = set()
    for _, _, files in os.walk(folder):
        kinds.update(MARKERS[name] for name in files if name in MARKERS)
        if len(kinds) == len(MARKERS):
            break
    return kinds


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    base = item.config._tmp_path_factory.getbasetemp()
    before = _entries(base)
    start = time.monotonic()
    yield
    seconds = time.monotonic() - start
    kinds = set()
    for name in _entries(base) - before:
        kinds |= _found(base / name)
    for kind in kinds:
        _costs[kind].append((seconds, item.nodeid))


def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    terminalreporter.section("where the time went (tests/suite_cost.py)")
    for kind, rows in _costs.items():
        total = sum(seconds for seconds, _ in rows)
        write(f"{len(rows)} tests made a {kind}: {total:.0f} s in all")
        for seconds, nodeid in sorted(rows, reverse=True)[:10]:
            write(f"  {seconds:7.1f} s  {nodeid}")
    wall = time.monotonic() - _started
    write(
        f"pytest wall time {wall:.0f} s ({wall / 60:.1f} min) of a {BUDGET_S // 60}-minute budget"
    )
