"""gs:// sources and registries, through google-cloud-storage against a local emulator server."""

import json

import pytest

from components.infra import storage
from components.prepare.config import PrepareConfig
from components.push.config import PushConfig
from tests.conftest import write_digit_images
from tests.gcs_proxy import GcsProxy
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
    from components.push.core import run

    export, evaluation = verified
    result = run(
        PushConfig(serving="none", registry=f"{gcs_emulator}/models", version="v7"),
        export,
        evaluation,
    )
    base = f"{gcs_emulator}/models/visionpipe-classifier"
    manifest = json.loads(storage.read_bytes(f"{base}/v7/manifest.json"))
    assert storage.read_bytes(f"{base}/v7/model.onnx") == b"onnx-bytes"
    assert len(manifest["files"]) == 6  # the export, and evaluation/ for the next gate
    latest = json.loads(storage.read_bytes(f"{base}/latest.json"))
    assert {k: latest[k] for k in ("version", "uri", "manifest_sha256")} == {
        k: result[k] for k in ("version", "uri", "manifest_sha256")
    }


@pytest.mark.slow
def test_baseline_model_from_a_bucket(tmp_path, gcs_emulator, digits_dataset, trained_model):
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run

    storage.copy_file(trained_model / "model.keras", f"{gcs_emulator}/deployed/model.keras")
    config = EvaluateConfig(min_accuracy=0.0, baseline_model=f"{gcs_emulator}/deployed")
    result = run(config, digits_dataset, trained_model, tmp_path / "ev")
    assert result["blessing"]["blessed"] is True
    assert result["blessing"]["baseline"]["baseline"]["accuracy"] == result["metrics"]["accuracy"]


def test_transient_429_and_503_are_retried(tmp_path, gcs_emulator, monkeypatch, verified):  # noqa: F811
    import os

    from components.prepare.core import run as prepare
    from components.push.core import run as push

    local = write_digit_images(tmp_path / "local", classes=(2, 5), per_class=8)
    upload_folder(local, f"{gcs_emulator}/flaky")
    proxy = GcsProxy(os.environ["STORAGE_EMULATOR_HOST"], flaky_every=3)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    storage.gcs_client.cache_clear()
    try:
        # workers=1: every read goes through this process's client and the proxy
        stats = prepare(PrepareConfig(workers=1), f"{gcs_emulator}/flaky", tmp_path / "out")
        export, evaluation = verified
        push(
            PushConfig(serving="none", registry=f"{gcs_emulator}/flaky-models", version="v1"),
            export,
            evaluation,
        )
        pushed = storage.read_bytes(
            f"{gcs_emulator}/flaky-models/visionpipe-classifier/v1/model.onnx"
        )
    finally:
        proxy.close()
        storage.gcs_client.cache_clear()
    assert stats["counts"]["total"] == 16 and not stats["rejected"]
    assert {429, 503} <= set(proxy.injected) and len(proxy.injected) >= 10
    assert pushed == b"onnx-bytes"


@pytest.mark.slow
def test_stage_commands_read_and_write_bucket_folders(tmp_path, gcs_emulator, capsys):
    """prepare -> train -> evaluate with every artifact folder in the bucket, through the
    `visionpipe` command line. The three stages run in this process (pipelines.cli.main, the
    console script's entry point: the same argument parsing, gs:// handling and exit codes,
    without a ~5 s TensorFlow import each); the refusal at the end is the installed command
    in its own process, reaching the emulator through the inherited environment."""
    import subprocess

    from pipelines.cli import main
    from tests.conftest import VISIONPIPE

    # 2 classes x 20 images, 2 epochs at width 4: the test is about where each artifact is
    # read and written, not about accuracy (evaluate gets min_accuracy=0)
    data = write_digit_images(tmp_path / "data", classes=(0, 1), per_class=20)
    upload_folder(data, f"{gcs_emulator}/src")
    base = f"{gcs_emulator}/artifacts"
    for command in (
        ["prepare", "--data", f"{gcs_emulator}/src", "--output", f"{base}/dataset"],
        [
            "train",
            "--dataset",
            f"{base}/dataset",
            "--output",
            f"{base}/model",
            "--set",
            "epochs=2",
            "--set",
            "width=4",
        ],
        [
            "evaluate",
            "--dataset",
            f"{base}/dataset",
            "--model",
            f"{base}/model",
            "--output",
            str(tmp_path / "evaluation"),
            "--set",
            "min_accuracy=0",
        ],
    ):
        code = main(command)
        assert code == 0, (command[0], capsys.readouterr().err[-2000:])
    names = {u.rsplit("/artifacts/", 1)[1] for u in storage.list_files(base)}
    assert {
        "dataset/stats.json",
        "dataset/classes.json",
        "dataset/config.json",
        "model/model.keras",
        "model/config.json",
        "model/history.csv",
    } <= names
    assert any(n.startswith("dataset/tfrecords/train-") for n in names)
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["count"] == 6
    missing = subprocess.run(
        [VISIONPIPE, "train", "--dataset", f"{base}/nothing", "--output", str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "has no config.json" in missing.stderr


@pytest.fixture
def strict_gcs(gcs_emulator, monkeypatch):
    """The emulator behind a proxy that enforces ifGenerationMatch (tests/gcs_proxy.py)."""
    import os

    proxy = GcsProxy(os.environ["STORAGE_EMULATOR_HOST"], preconditions=True)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    storage.gcs_client.cache_clear()
    yield gcs_emulator, proxy
    proxy.close()
    storage.gcs_client.cache_clear()


def test_preconditions_hold_on_the_proxied_emulator(strict_gcs):
    bucket, proxy = strict_gcs
    assert storage.create_exclusive(f"{bucket}/pc/a", b"one")
    assert not storage.create_exclusive(f"{bucket}/pc/a", b"two")
    assert storage.read_bytes(f"{bucket}/pc/a") == b"one"
    data, token = storage.read_versioned(f"{bucket}/pc/a")
    assert data == b"one"
    assert storage.write_if_unchanged(f"{bucket}/pc/a", b"three", token)
    assert not storage.write_if_unchanged(f"{bucket}/pc/a", b"four", token)  # stale token
    assert storage.read_bytes(f"{bucket}/pc/a") == b"three"
    assert proxy.refused == ["pc/a", "pc/a"]


def concurrent_pushes(registry, export, evaluation, count=2, version=""):
    """`count` `visionpipe push` processes started together against one registry."""
    import subprocess

    from tests.conftest import VISIONPIPE

    command = [VISIONPIPE, "push", "--export", str(export), "--evaluation", str(evaluation)]
    command += ["--set", f"registry={registry}", "--set", "serving=none"] + (
        ["--set", f"version={version}"] * bool(version)
    )
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    return [(p.wait(), p.stderr.read()) for p in processes]


@pytest.mark.parametrize("where", ["bucket", "folder"])
def test_pushes_at_once_get_distinct_complete_versions(where, strict_gcs, tmp_path, verified):  # noqa: F811
    from components.push.core import verify

    bucket, proxy = strict_gcs
    export, evaluation = verified
    registry = f"{bucket}/race" if where == "bucket" else str(tmp_path / "registry")
    results = concurrent_pushes(registry, export, evaluation, count=3)
    assert [code for code, _ in results] == [0, 0, 0], results
    base = f"{registry}/visionpipe-classifier"
    versions = sorted(
        {storage.relative(u, base).split("/")[0] for u in storage.list_files(base)}
        - {"latest.json"}
    )
    assert len(versions) == 3  # one automatic name raced for: one won, the others got -N
    for version in versions:
        assert verify(f"{base}/{version}") == []
    latest = json.loads(storage.read_bytes(f"{base}/latest.json"))
    assert latest["version"] in versions and verify(latest["uri"]) == []


def test_an_explicit_version_raced_for_is_published_once(strict_gcs, verified):  # noqa: F811
    bucket, _ = strict_gcs
    export, evaluation = verified
    results = concurrent_pushes(f"{bucket}/race2", export, evaluation, count=2, version="1.10")
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "version '1.10' already exists" in loser.strip().splitlines()[-1]
    latest = json.loads(storage.read_bytes(f"{bucket}/race2/visionpipe-classifier/latest.json"))
    assert latest["version"] == "1.10"
