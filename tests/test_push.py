"""Push: a verified export is published with a manifest; latest.json moves last."""

import hashlib
import json

import pytest

from components.common.errors import UserError
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
    result = run(PushConfig(registry=str(registry), version="v1"), export, evaluation)
    target = registry / "visionpipe-classifier" / "v1"
    manifest = json.loads((target / "manifest.json").read_text())
    assert {e["path"] for e in manifest["files"]} == {
        "model.onnx",
        "model.tflite",
        "parity.json",
        "saved_model/variables/v.index",
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
    config = PushConfig(registry=str(tmp_path / "registry"), version="v1")
    run(config, export, evaluation)
    with pytest.raises(UserError, match="already exists"):
        run(config, export, evaluation)


def test_automatic_versions_sort_by_time_and_name_the_model_hash(tmp_path, verified):
    export, evaluation = verified
    result = run(PushConfig(registry=str(tmp_path / "r")), export, evaluation)
    onnx_hash = hashlib.sha256(b"onnx-bytes").hexdigest()[:8]
    assert result["version"].endswith("-" + onnx_hash) and result["version"][:8].isdigit()


def test_unblessed_or_unverified_exports_are_refused(tmp_path, verified):
    export, evaluation = verified
    (evaluation / "blessing.json").write_text(
        json.dumps({"blessed": False, "reasons": ["accuracy 0.5 is below the threshold 0.9"]})
    )
    with pytest.raises(UserError, match="not blessed: accuracy 0.5"):
        run(PushConfig(registry=str(tmp_path / "r")), export, evaluation)
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": True}))
    (export / "parity.json").write_text(json.dumps({"tflite_int8": {"passed": False}}))
    with pytest.raises(UserError, match="failed verification: tflite_int8"):
        run(PushConfig(registry=str(tmp_path / "r")), export, evaluation)
    assert not (tmp_path / "r").exists()


def test_no_registry_publishes_nothing(tmp_path, verified):
    export, evaluation = verified
    assert run(PushConfig(), export, evaluation)["pushed"] is False


def test_model_name_is_validated():
    with pytest.raises(UserError, match="model_name"):
        PushConfig.from_dict({"model_name": "../escape"})
