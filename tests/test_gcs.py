"""gs:// sources and registries, through google-cloud-storage against a local emulator server."""

import json

import pytest

from components.common import storage
from components.export.config import PushConfig
from components.prepare.config import PrepareConfig
from tests.conftest import write_digit_images
from tests.test_push import verified  # noqa: F401  (fixture)


def upload_folder(folder, prefix):
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            storage.copy_file(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_storage_round_trip(gcs_emulator):
    storage.write_bytes(f"{gcs_emulator}/rt/a.bin", b"\x00\x01")
    assert storage.read_bytes(f"{gcs_emulator}/rt/a.bin") == b"\x00\x01"
    assert storage.exists(f"{gcs_emulator}/rt/a.bin")
    assert not storage.exists(f"{gcs_emulator}/rt/missing")
    assert list(storage.list_files(f"{gcs_emulator}/rt")) == [f"{gcs_emulator}/rt/a.bin"]


def test_prepare_reads_class_folders_from_a_bucket(tmp_path, gcs_emulator):
    from components.prepare.core import run

    local = write_digit_images(tmp_path / "local", classes=(2, 5), per_class=20)
    upload_folder(local, f"{gcs_emulator}/digits")
    (tmp_path / "junk.png").write_bytes(b"junk")
    storage.copy_file(tmp_path / "junk.png", f"{gcs_emulator}/digits/digit_2/junk.png")
    stats = run(
        PrepareConfig(max_rejected_fraction=0.1), f"{gcs_emulator}/digits", tmp_path / "out"
    )
    assert stats["classes"] == ["digit_2", "digit_5"] and stats["counts"]["total"] == 40
    assert stats["rejected"][0]["uri"] == f"{gcs_emulator}/digits/digit_2/junk.png"
    with open(tmp_path / "out" / "splits" / "train.csv") as handle:
        assert f"{gcs_emulator}/digits/" in handle.read()


def test_push_to_a_bucket(gcs_emulator, verified):  # noqa: F811
    from components.export.push import run

    export, evaluation = verified
    result = run(PushConfig(registry=f"{gcs_emulator}/models", version="v7"), export, evaluation)
    base = f"{gcs_emulator}/models/visionpipe-classifier"
    manifest = json.loads(storage.read_bytes(f"{base}/v7/manifest.json"))
    assert storage.read_bytes(f"{base}/v7/model.onnx") == b"onnx-bytes"
    assert len(manifest["files"]) == 4
    latest = json.loads(storage.read_bytes(f"{base}/latest.json"))
    assert latest == {k: result[k] for k in ("version", "uri", "manifest_sha256")}


@pytest.mark.slow
def test_baseline_model_from_a_bucket(tmp_path, gcs_emulator, digits_dataset, trained_model):
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run

    storage.copy_file(trained_model / "model.keras", f"{gcs_emulator}/deployed/model.keras")
    config = EvaluateConfig(min_accuracy=0.0, baseline_model=f"{gcs_emulator}/deployed")
    result = run(config, digits_dataset, trained_model, tmp_path / "ev")
    assert result["blessing"]["blessed"] is True
    assert result["blessing"]["baseline"]["accuracy"] == result["metrics"]["accuracy"]
