"""What this process may use: CPUs and memory as the container's cgroup limits them.

A pod with `cpu: 4` on a 64-core node sees 64 CPUs in os.cpu_count() and its node's
memory in /proc/meminfo; the limits that count are the cgroup's (v2: cpu.max,
memory.max; v1: cpu.cfs_quota_us / cpu.cfs_period_us, memory.limit_in_bytes).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPU quota in CPUs (None: no quota)."""
    text = _read(root / "cpu.max")  # v2: "<quota> <period>" or "max <period>"
    if text:
        quota, _, period = text.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota, period = (
        _read(root / "cpu" / "cpu.cfs_quota_us"),
        _read(root / "cpu" / "cpu.cfs_period_us"),
    )
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def cpu_limit(root: Path = CGROUP) -> int:
    """CPUs to use: the cgroup quota (rounded up), this process's affinity, whichever is
    fewer; at least 1."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpus(root)
    if quota is not None:
        available = min(available or 1, math.ceil(quota))
    return max(1, available or 1)


def memory_limit(root: Path = CGROUP, meminfo: Path = Path("/proc/meminfo")) -> tuple[int, str]:
    """(bytes, where it comes from): the cgroup memory limit, else the machine's memory."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        text = _read(path)
        if text and text != "max" and int(text) < 1 << 60:  # v1 "unlimited" is a huge number
            return int(text), f"cgroup {path}"
    text = _read(meminfo) or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024, "MemTotal in /proc/meminfo"
    return 8 << 30, "unknown (assumed 8 GiB)"
