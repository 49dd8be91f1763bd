"""Push: a verified export is published with a manifest; latest.json moves last."""

import hashlib
import json
from pathlib import Path

import pytest

from components.infra.errors import PushRefused, UserError
from components.push.config import PushConfig
from components.push.core import run


@pytest.fixture
def verified(tmp_path):
    """An export and evaluation folder as the stages write them (small stand-in files)."""
    export = tmp_path / "export"
    (export / "saved_model" / "variables").mkdir(parents=True)
    (export / "model.onnx").write_bytes(b"onnx-bytes")
    (export / "model.tflite").write_bytes(b"tflite-bytes")
    (export / "saved_model" / "variables" / "v.index").write_bytes(b"index")
    (export / "parity.json").write_text(
        json.dumps({"keras": {"accuracy": 1.0}, "onnx": {"passed": True}})
    )
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": True, "reasons": []}))
    (evaluation / "metrics.json").write_text(json.dumps({"accuracy": 0.99, "macro_f1": 0.98}))
    return export, evaluation


def test_push_copies_every_file_with_its_hash_then_moves_latest(tmp_path, verified):
    export, evaluation = verified
    registry = tmp_path / "registry"
    result = run(
        PushConfig(serving="none", registry=str(registry), version="v1"), export, evaluation
    )
    target = registry / "visionpipe-classifier" / "v1"
    manifest = json.loads((target / "manifest.json").read_text())
    assert {e["path"] for e in manifest["files"]} == {
        "model.onnx",
        "model.tflite",
        "parity.json",
        "saved_model/variables/v.index",
        "evaluation/blessing.json",
        "evaluation/metrics.json",
    }
    for entry in manifest["files"]:
        data = (target / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    latest = json.loads((registry / "visionpipe-classifier" / "latest.json").read_text())
    assert latest["version"] == "v1" and latest["uri"] == str(target)
    assert (
        latest["manifest_sha256"]
        == hashlib.sha256((target / "manifest.json").read_bytes()).hexdigest()
    )
    assert result["pushed"] and manifest["test_accuracy"] == 0.99


def test_a_version_is_never_overwritten(tmp_path, verified):
    export, evaluation = verified
    config = PushConfig(serving="none", registry=str(tmp_path / "registry"), version="v1")
    run(config, export, evaluation)
    with pytest.raises(UserError, match="already exists"):
        run(config, export, evaluation)


def test_automatic_versions_sort_by_time_and_name_the_model_hash(tmp_path, verified):
    export, evaluation = verified
    result = run(PushConfig(serving="none", registry=str(tmp_path / "r")), export, evaluation)
    onnx_hash = hashlib.sha256(b"onnx-bytes").hexdigest()[:8]
    assert result["version"].endswith("-" + onnx_hash) and result["version"][:8].isdigit()


def test_unblessed_or_unverified_exports_are_refused(tmp_path, verified):
    export, evaluation = verified
    (evaluation / "blessing.json").write_text(
        json.dumps({"blessed": False, "reasons": ["accuracy 0.5 is below the threshold 0.9"]})
    )
    with pytest.raises(PushRefused, match="not blessed: accuracy 0.5"):
        run(PushConfig(serving="none", registry=str(tmp_path / "r")), export, evaluation)
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": True}))
    (export / "parity.json").write_text(json.dumps({"tflite_int8": {"passed": False}}))
    with pytest.raises(PushRefused, match="failed verification: tflite_int8"):
        run(PushConfig(serving="none", registry=str(tmp_path / "r")), export, evaluation)
    assert not (tmp_path / "r").exists()


def test_no_registry_publishes_nothing(tmp_path, verified):
    export, evaluation = verified
    assert run(PushConfig(serving="none"), export, evaluation)["pushed"] is False


def test_model_name_is_validated():
    with pytest.raises(UserError, match="model_name"):
        PushConfig.from_dict({"model_name": "../escape"})


def test_a_refused_push_has_its_own_exit_code(tmp_path, verified, capsys):
    from pipelines.cli import main

    export, evaluation = verified
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": False, "reasons": ["x"]}))
    args = ["push", "--export", str(export), "--evaluation", str(evaluation)]
    assert main([*args, "--set", f"registry={tmp_path / 'r'}"]) == 3
    assert capsys.readouterr().err.strip() == (
        "visionpipe: refused: refusing to push a model that is not blessed: x"
    )


def test_push_publishes_what_re_evaluation_needs(tmp_path, verified):
    from components.infra import registry

    export, evaluation = verified
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.keras").write_bytes(b"keras-bytes")
    (model / "history.csv").write_text("epoch\n0\n")  # not needed: not published
    dataset = tmp_path / "dataset"
    (dataset / "splits").mkdir(parents=True)
    for split in ("train", "val", "test"):
        (dataset / "splits" / f"{split}.csv").write_text(f"uri,label,sha256\n{split}.png,a,ff\n")
    (dataset / "classes.json").write_text('["a", "b"]')
    config = PushConfig(serving="none", registry=str(tmp_path / "registry"), version="1.10")
    run(config, export, evaluation, model=model, dataset=dataset)
    found = registry.resolve(str(tmp_path / "registry" / "visionpipe-classifier"))
    assert found.version == "1.10" and found.label == "visionpipe-classifier 1.10"
    assert registry.resolve(found.uri).uri == found.uri  # a version folder resolves too
    assert (Path(found.part("model")) / "model.keras").read_bytes() == b"keras-bytes"
    assert not (Path(found.part("model")) / "history.csv").exists()
    assert (Path(found.part("dataset")) / "splits" / "test.csv").exists()
    assert (Path(found.part("evaluation")) / "metrics.json").exists()
    assert found.manifest["reference"] == {"model": True, "dataset": True, "evaluation": True}
    assert registry.resolve(str(tmp_path / "nothing-here")) is None
