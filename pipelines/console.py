"""What `visionpipe run` shows a person, and where everything else goes.

kfp.local prints each task's whole executor input and output and streams the
task's own output, all to stdout: about 600 lines for the digits run, the
stage lines a person wants lost among them. While the pipeline runs, stdout is
a `Console`:

- everything goes to `<run>/logs/runner.log`, and each task's part also to
  `<run>/logs/<task>.log`;
- the terminal gets one line as each task starts and ends, the stages' own
  progress lines (`HH:MM:SS [stage] ...`, which carry the headline numbers),
  and one line per training epoch (Keras' two-line epoch report, folded);
- when a task fails, the last lines of its log and the log's path.

`--verbose` passes everything through as well (the files are still written).
"""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_START = re.compile(r"Executing task '([\w.-]+)'")
TASK_END = re.compile(r"Task '([\w.-]+)' finished with status (\w+)")
PROGRESS = re.compile(r"^\s*(\d\d:\d\d:\d\d \[[\w-]+\] .*)$")
EPOCH = re.compile(r"^\s*Epoch (\d+)/(\d+)\s*$")
EPOCH_METRICS = re.compile(r"^\s*\d+/\d+ - [\d.]+m?s - [\d.]+[mµu]?s/step - (.*)$")
TAIL_LINES = 25


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


class Console(io.TextIOBase):
    """A write-only text stream that files every line and shows the ones worth reading."""

    def __init__(self, logs: Path, terminal: TextIO, verbose: bool = False):
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.terminal = terminal
        self.verbose = verbose
        self.runner = open(logs / "runner.log", "a", encoding="utf-8")
        self.task: str | None = None
        self.task_file: TextIO | None = None
        self.task_started = 0.0
        self.epoch: tuple[str, str] | None = None
        self.pending = ""
        self.failed: list[tuple[str, Path]] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.verbose:
            self.terminal.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self.runner.flush()
        if self.task_file:
            self.task_file.flush()
        self.terminal.flush()

    def close_files(self) -> None:
        if self.pending:
            self._line(self.pending)
            self.pending = ""
        if self.task_file:
            self.task_file.close()
            self.task_file = None
        self.runner.close()

    def show(self, line: str) -> None:
        if not self.verbose:
            self.terminal.write(line + "\n")
            self.terminal.flush()

    def _line(self, raw: str) -> None:
        line = strip_ansi(raw).rstrip("\r")
        self.runner.write(line + "\n")
        started = TASK_START.search(line)
        if started:
            self._open_task(started.group(1))
        if self.task_file:
            self.task_file.write(line + "\n")
        ended = TASK_END.search(line)
        if ended:
            self._close_task(ended.group(1), ended.group(2))
            return
        if "\r" in line:  # a progress bar redrawing itself: the file has it
            return
        progress = PROGRESS.match(line)
        if progress:
            self.show("  " + progress.group(1))
            return
        epoch = EPOCH.match(line)
        if epoch:
            self.epoch = (epoch.group(1), epoch.group(2))
            return
        metrics = EPOCH_METRICS.match(line)
        if metrics:
            self.epoch = self.epoch or ("1", "1")  # Keras prints no header for a single epoch
            values = metrics.group(1).replace(": ", " ").replace(" - ", ", ")
            stamp = time.strftime("%H:%M:%S")
            self.show(f"  {stamp} [{self.task}] epoch {self.epoch[0]}/{self.epoch[1]}: {values}")
            self.epoch = None

    def _open_task(self, task: str) -> None:
        if self.task_file:
            self.task_file.close()
        self.task, self.task_started = task, time.time()
        self.task_file = open(self.logs / f"{task}.log", "w", encoding="utf-8")
        self.show(f"{time.strftime('%H:%M:%S')} {task}: started")

    def _close_task(self, task: str, status: str) -> None:
        path = self.logs / f"{task}.log"
        if self.task_file:
            self.task_file.close()
            self.task_file = None
        seconds = time.time() - self.task_started
        self.show(f"{time.strftime('%H:%M:%S')} {task}: {status.lower()} in {seconds:.0f} s")
        if status != "SUCCESS":
            self.failed.append((task, path))
            tail = path.read_text(encoding="utf-8").splitlines()[-TAIL_LINES:]
            self.show(f"--- the last {len(tail)} lines of {path} ---")
            for line in tail:
                self.show("  " + line)
            self.show("---")
        self.task = None


class captured_stdout:
    """`with captured_stdout(logs, verbose) as console:` routes sys.stdout through a Console."""

    def __init__(self, logs: Path, verbose: bool = False):
        self.console = Console(logs, sys.stdout, verbose)

    def __enter__(self) -> Console:
        self.saved = sys.stdout
        sys.stdout = self.console
        return self.console

    def __exit__(self, *exc) -> None:
        sys.stdout = self.saved
        self.console.close_files()
