"""prepare.parallelism: the compiled DAG fans prepare out (scan x N -> plan -> encode x N
-> merge) and training reads the merged dataset. The steps themselves are compared with
single-task prepare in tests/test_prepare_fanout.py; no cluster runs here."""

import pytest
import yaml

from pipelines.pipeline import compile_pipeline


def compiled(tmp_path, parallelism):
    path = compile_pipeline(str(tmp_path / "p.yaml"), prepare_parallelism=parallelism)
    return next(yaml.safe_load_all(open(path)))


def stage_tasks(spec):
    """The stages' DAG: everything after `changes` sits in its "changed" condition."""
    (changed,) = [t for t in spec["root"]["dag"]["tasks"].values() if "triggerPolicy" in t]
    assert changed["taskInfo"]["name"] == "changed"
    return spec["components"][changed["componentRef"]["name"]]["dag"]["tasks"]


def test_the_fan_out_wiring(tmp_path):
    spec = compiled(tmp_path, 3)
    tasks = stage_tasks(spec)
    loops = {name: task for name, task in tasks.items() if name.startswith("for-loop")}
    assert len(loops) == 2
    for loop in loops.values():
        assert loop["iteratorPolicy"] == {"parallelismLimit": 3}
        assert loop["parameterIterator"]["items"] == {"raw": "[0, 1, 2]"}
    inner = {
        name: spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
        for name, loop in loops.items()
    }
    scan_loop = next(n for n, t in inner.items() if "prepare-scan" in t)
    encode_loop = next(n for n, t in inner.items() if "prepare-encode" in t)
    scan = inner[scan_loop]["prepare-scan"]
    assert scan["cachingOptions"] == {"enableCache": True}
    assert "fingerprint" in str(scan["inputs"]["parameters"]["fingerprint"])
    plan = tasks["prepare-plan"]["inputs"]["artifacts"]["scans"]["taskOutputArtifact"]
    assert plan["producerTask"] == scan_loop  # every scan, collected
    merge = tasks["prepare-merge"]["inputs"]["artifacts"]
    assert merge["encoded"]["taskOutputArtifact"]["producerTask"] == encode_loop
    assert merge["plan"]["taskOutputArtifact"]["producerTask"] == "prepare-plan"
    train = tasks["train"]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]
    assert train == {"outputArtifactKey": "dataset", "producerTask": "prepare-merge"}
    assert "prepare" not in tasks  # the single task is replaced, not duplicated


def test_parallelism_one_keeps_the_single_task(tmp_path):
    tasks = stage_tasks(compiled(tmp_path, 1))
    assert "prepare" in tasks and not any(n.startswith("for-loop") for n in tasks)


def test_submit_compiles_with_the_configs_parallelism():
    from pipelines.submit import prepare_parallelism

    assert prepare_parallelism({"prepare_config": {"parallelism": 4}}) == 4
    assert prepare_parallelism({"data": "gs://b/p"}) == 1


def test_parallelism_is_validated():
    from components.infra.errors import UserError
    from components.prepare.config import PrepareConfig

    with pytest.raises(UserError, match="parallelism"):
        PrepareConfig.from_dict({"parallelism": 0})


@pytest.mark.slow
def test_the_fan_out_runs_in_kfp_local_and_writes_the_single_task_dataset(tmp_path):
    """The compiled fan-out runs end to end in kfp.local (scan x 2, plan, encode x 2,
    merge, then train to push), and its dataset is the one single-task prepare writes."""
    import filecmp
    import glob

    from kfp import local

    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from pipelines.pipeline import make_pipeline
    from tests.conftest import write_digit_images

    data = write_digit_images(tmp_path / "digits", classes=(0, 1, 7), per_class=30, size=24)
    prepare_config = {"parallelism": 2, "shard_size": 16, "workers": 1}
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "root"),
        raise_on_error=True,
    )
    make_pipeline(None, prepare_parallelism=2)(
        data=str(data),
        prepare_config=prepare_config,
        train_config={"epochs": 1, "width": 8},
        evaluate_config={"min_accuracy": 0.0},
        export_config={"formats": ["onnx"], "benchmark_runs": 2},
        push_config={},
    )
    (merged,) = glob.glob(str(tmp_path / "root" / "*" / "prepare-merge" / "dataset"))
    single = tmp_path / "single"
    prepare(PrepareConfig.from_dict(prepare_config), str(data), single)
    for name in ("splits/train.csv", "splits/val.csv", "splits/test.csv", "stats.json"):
        assert filecmp.cmp(single / name, f"{merged}/{name}", shallow=False), name
    shards = sorted(p.name for p in (single / "tfrecords").iterdir())
    assert len(shards) >= 3
    for name in shards:
        assert same_examples(single / "tfrecords" / name, f"{merged}/tfrecords/{name}"), name
    assert glob.glob(str(tmp_path / "root" / "*" / "export" / "exported" / "model.onnx"))


def same_examples(a, b) -> bool:
    """The same tf.train.Examples in the same order. Not a byte comparison: protobuf
    serialises the features map in an order that differs between processes."""
    import tensorflow as tf

    first = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(a))]
    second = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(b))]
    return first == second
