"""Limits read from the cgroup (as a pod sees them), and train.cache: RAM, local disk or
nowhere, chosen from the decoded size and the memory limit; the disk path trains
bit-for-bit like the memory path (op determinism on CPU)."""

import json

import numpy as np
import pytest

from components.infra import resources


def test_cgroup_v2_limits(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    (tmp_path / "memory.max").write_text(str(3 << 30) + "\n")
    assert resources.cgroup_cpus(tmp_path) == 2.5
    assert resources.cpu_limit(tmp_path) == min(3, resources.cpu_limit(tmp_path / "none"))
    assert resources.memory_limit(tmp_path) == (3 << 30, f"cgroup {tmp_path / 'memory.max'}")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert resources.cgroup_cpus(tmp_path) is None
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384 kB\nMemFree: 1 kB\n")
    assert resources.memory_limit(tmp_path, meminfo) == (16384 * 1024, "MemTotal in /proc/meminfo")


def test_cgroup_v1_limits(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(1 << 30))
    assert resources.cpu_limit(tmp_path) == 1
    assert resources.memory_limit(tmp_path)[0] == 1 << 30


@pytest.mark.slow
def test_auto_goes_to_disk_under_a_tiny_budget_and_trains_identically(
    tmp_path, digits_dataset, monkeypatch
):
    from components.train.config import TrainConfig
    from components.train.core import run

    # two epochs, not one: the first fills the cache, only the second reads it back
    config = dict(epochs=2, width=8, preflight="off", deterministic="on")
    run(TrainConfig(cache="memory", **config), digits_dataset, tmp_path / "memory")
    monkeypatch.setattr(resources, "memory_limit", lambda: (1 << 20, "a test budget of 1 MiB"))
    run(TrainConfig(cache="auto", **config), digits_dataset, tmp_path / "disk")
    record = json.loads((tmp_path / "disk" / "config.json").read_text())
    assert record["cache"]["mode"] == "disk" and "exceeds" in record["cache"]["reason"]
    assert (
        json.loads((tmp_path / "memory" / "config.json").read_text())["cache"]["mode"] == "memory"
    )
    import keras

    a = keras.models.load_model(tmp_path / "memory" / "model.keras", compile=False)
    b = keras.models.load_model(tmp_path / "disk" / "model.keras", compile=False)
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
