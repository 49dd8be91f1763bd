"""Prepare fanned out (scan x N, plan, encode x N, merge) gives the dataset single-task
prepare gives: the same manifests and stats, byte for byte, and the same examples in
the same order in every shard (in one process the shard files are byte-identical too;
across processes protobuf may order an Example's feature map differently)."""

import filecmp
import json

import pytest

from components.prepare import fanout
from components.prepare.config import PrepareConfig
from components.prepare.core import run
from tests.conftest import write_digit_images


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fanout") / "digits"
    write_digit_images(folder, classes=(0, 1, 7, 9), per_class=40, size=24)
    # an exact copy under the same class and one under another: a duplicate group and a
    # conflict, which the plan must see across scan shards
    (folder / "digit_0" / "copy.png").write_bytes((folder / "digit_0" / "002.png").read_bytes())
    (folder / "digit_1" / "copy.png").write_bytes((folder / "digit_7" / "004.png").read_bytes())
    return folder


@pytest.mark.parametrize("shards", [1, 3])
def test_fan_out_equals_single_task(tmp_path, source, shards):
    config = PrepareConfig(shard_size=16, kfold=2, workers=1)
    single = tmp_path / "single"
    run(config, str(source), single)
    scans = [tmp_path / f"scan-{i}" for i in range(shards)]
    for i, folder in enumerate(scans):
        fanout.scan(config, str(source), i, shards, folder)
    plan = tmp_path / "plan"
    fanout.plan(config, str(source), scans, plan)
    encoded = [tmp_path / f"encode-{j}" for j in range(shards)]
    for j, folder in enumerate(encoded):
        fanout.encode(config, plan, j, shards, folder)
    merged = tmp_path / "merged"
    fanout.merge(config, str(source), plan, encoded, merged)

    for name in ("splits/train.csv", "splits/val.csv", "splits/test.csv", "splits/kfold.csv"):
        assert filecmp.cmp(single / name, merged / name, shallow=False), name
    assert json.loads((single / "stats.json").read_text()) == json.loads(
        (merged / "stats.json").read_text()
    )
    shards_single = sorted(p.name for p in (single / "tfrecords").iterdir())
    shards_merged = sorted(p.name for p in (merged / "tfrecords").iterdir())
    assert shards_single == shards_merged and len(shards_single) > 3
    for name in shards_single:
        assert filecmp.cmp(single / "tfrecords" / name, merged / "tfrecords" / name, shallow=False)
    assert json.loads((merged / "config.json").read_text())["parallelism"] == shards


def test_a_missing_scan_is_refused(tmp_path, source):
    from components.infra.errors import UserError

    config = PrepareConfig(workers=1)
    fanout.scan(config, str(source), 0, 2, tmp_path / "scan-0")
    with pytest.raises(UserError, match="the source changed while prepare ran"):
        fanout.plan(config, str(source), [tmp_path / "scan-0"], tmp_path / "plan")
