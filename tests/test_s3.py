"""s3:// and minio:// locations through boto3, against a real S3 API server (moto's
standalone server, started by the `s3_server` fixture on localhost).

The tests that also hold for Cloud Storage take the `object_store` fixture and run
three times: on the Cloud Storage emulator, on `s3://` and on `minio://`.
"""

import json
import os
import subprocess

import pytest
import yaml

from components.infra import objectstores, storage
from components.infra.errors import UserError
from components.prepare.config import PrepareConfig
from components.push.config import PushConfig
from tests.conftest import VISIONPIPE, reset_s3_clients, write_digit_images
from tests.gcs_proxy import GcsProxy
from tests.test_gcs import concurrent_pushes, upload_folder
from tests.test_push import verified  # noqa: F401  (fixture)


def test_every_operation_on_each_store(object_store):
    base = f"{object_store}/ops"
    storage.write_bytes(f"{base}/a.bin", b"\x00\x01")
    assert storage.read_bytes(f"{base}/a.bin") == b"\x00\x01"
    assert storage.exists(f"{base}/a.bin") and not storage.exists(f"{base}/missing")
    with pytest.raises(FileNotFoundError) as missing:
        storage.read_bytes(f"{base}/missing")
    assert missing.value.filename == f"{base}/missing"  # errors.py prints it as one line
    assert storage.create_exclusive(f"{base}/claim", b"one")
    assert not storage.create_exclusive(f"{base}/claim", b"two")
    assert storage.read_bytes(f"{base}/claim") == b"one"
    data, token = storage.read_versioned(f"{base}/claim")
    assert data == b"one"
    assert storage.write_if_unchanged(f"{base}/claim", b"three", token)
    assert not storage.write_if_unchanged(f"{base}/claim", b"four", token)  # stale token
    absent, none = storage.read_versioned(f"{base}/new")
    assert absent is None and storage.write_if_unchanged(f"{base}/new", b"n", none)
    assert not storage.write_if_unchanged(f"{base}/new", b"m", none)  # created in between
    listing = storage.listing(f"{base}/")
    assert sorted(listing) == [f"{base}/{n}" for n in ("a.bin", "claim", "new")]
    assert listing[f"{base}/a.bin"].startswith("2 ")  # size, then generation or ETag
    assert storage.delete_tree(base) == 3 and storage.is_empty(base)
    storage.delete(f"{base}/a.bin")  # already gone: not an error


def test_prepare_from_a_folder_and_a_manifest_in_s3(tmp_path, s3_server):
    from components.prepare.core import run
    from components.vision.fingerprint import fingerprint

    local = write_digit_images(tmp_path / "local", classes=(2, 5), per_class=12)
    upload_folder(local, f"{s3_server}/photos")
    (tmp_path / "junk.png").write_bytes(b"junk")
    storage.copy_file(tmp_path / "junk.png", f"{s3_server}/photos/digit_2/junk.png")
    before = fingerprint(f"{s3_server}/photos")
    stats = run(PrepareConfig(max_rejected_fraction=0.1), f"{s3_server}/photos", tmp_path / "a")
    assert stats["counts"]["total"] == 24
    assert stats["rejected"][0]["uri"] == f"{s3_server}/photos/digit_2/junk.png"
    storage.write_bytes(f"{s3_server}/photos/digit_2/junk.png", b"other junk")
    assert fingerprint(f"{s3_server}/photos") != before  # the listing's ETag and size moved

    # a manifest in the bucket: rows relative to it, absolute s3:// rows, one missing
    fives = sorted(p.name for p in (local / "digit_5").iterdir())
    twos = sorted(p.name for p in (local / "digit_2").iterdir())
    rows = ["uri,label"] + [f"digit_5/{name},five" for name in fives]
    rows += [f"{s3_server}/photos/digit_2/{name},two" for name in twos]
    rows += ["digit_5/999.png,five"]
    storage.write_bytes(f"{s3_server}/photos/labels.csv", ("\n".join(rows) + "\n").encode())
    config = PrepareConfig(max_rejected_fraction=0.1)
    stats = run(config, f"{s3_server}/photos/labels.csv", tmp_path / "b")
    assert stats["classes"] == ["five", "two"] and stats["counts"]["total"] == 24
    assert [r["reason"] for r in stats["rejected"]] == ["file not found"]


def test_transient_5xx_on_s3_are_retried(tmp_path, s3_server, monkeypatch, verified):  # noqa: F811
    from components.prepare.core import run as prepare
    from components.push.core import run as push

    local = write_digit_images(tmp_path / "local", classes=(2, 5), per_class=8)
    upload_folder(local, f"{s3_server}/flaky")
    proxy = GcsProxy(os.environ["AWS_ENDPOINT_URL_S3"], flaky_every=3, s3=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    reset_s3_clients()
    try:
        stats = prepare(PrepareConfig(workers=1), f"{s3_server}/flaky", tmp_path / "out")
        export, evaluation = verified
        config = PushConfig(serving="none", registry=f"{s3_server}/flaky-models", version="v1")
        push(config, export, evaluation)
        pushed = storage.read_bytes(f"{s3_server}/flaky-models/visionpipe-classifier/v1/model.onnx")
    finally:
        proxy.close()
        monkeypatch.undo()
        reset_s3_clients()
    assert stats["counts"]["total"] == 16 and not stats["rejected"]
    assert {500, 503} <= set(proxy.injected) and len(proxy.injected) >= 10
    assert pushed == b"onnx-bytes"


def test_pushes_at_once_to_s3_get_distinct_complete_versions(s3_server, verified):  # noqa: F811
    from components.push.core import verify

    export, evaluation = verified
    registry = f"{s3_server}/race"
    results = concurrent_pushes(registry, export, evaluation, count=3)
    assert [code for code, _ in results] == [0, 0, 0], results
    base = f"{registry}/visionpipe-classifier"
    versions = sorted(
        {storage.relative(u, base).split("/")[0] for u in storage.list_files(base)}
        - {"latest.json"}
    )
    assert len(versions) == 3
    for version in versions:
        assert verify(f"{base}/{version}") == []
    latest = json.loads(storage.read_bytes(f"{base}/latest.json"))
    assert latest["version"] in versions and verify(latest["uri"]) == []


def test_an_endpoint_that_ignores_preconditions_is_refused(s3_server, monkeypatch, verified):  # noqa: F811
    """The proxy drops If-None-Match and If-Match: what a store without conditional writes
    does. Push refuses with one line before it claims anything."""
    from components.push.core import run as push

    proxy = GcsProxy(os.environ["AWS_ENDPOINT_URL_S3"], strip_headers=("If-None-Match", "If-Match"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    reset_s3_clients()
    export, evaluation = verified
    try:
        with pytest.raises(UserError) as refused:
            push(PushConfig(serving="none", registry=f"{s3_server}/loose"), export, evaluation)
    finally:
        proxy.close()
        monkeypatch.undo()
        reset_s3_clients()
    assert "ignores If-None-Match" in str(refused.value) and "\n" not in str(refused.value)
    assert list(storage.list_files(f"{s3_server}/loose")) == []  # nothing claimed, probe gone


def test_minio_without_an_endpoint_says_how_to_set_one(monkeypatch):
    for name in objectstores.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="AWS_ENDPOINT_URL_S3"):
        storage.read_bytes("minio://mlpipeline/v2/artifacts/x")


def test_a_push_to_minio_serves_from_s3_in_kserve(s3_server, verified):  # noqa: F811
    from components.push.core import run as push

    export, evaluation = verified
    registry = s3_server.replace("s3://", "minio://") + "/kserve"
    (export / "saved_model" / "saved_model.pb").write_bytes(b"pb")
    config = PushConfig(serving="tensorflow", registry=registry, serving_service_account="sa-s3")
    result = push(config, export, evaluation)
    service = yaml.safe_load(storage.read_bytes(f"{result['uri']}/inferenceservice.yaml"))
    predictor = service["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == result["uri"].replace("minio://", "s3://") + (
        "/serving/tensorflow"
    )
    assert predictor["serviceAccountName"] == "sa-s3"


@pytest.mark.parametrize(
    "where",
    ["azure://container/model", "s3:/acc/model", "hdfs://namenode/model"],
)
def test_an_unservable_output_exits_2_with_one_line(tmp_path, where):
    result = subprocess.run(
        [VISIONPIPE, "train", "--dataset", str(tmp_path), "--output", where],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and "s3://" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # no local folder named 's3:' or 'azure:'


def test_compile_refuses_a_pipeline_root_it_cannot_serve(tmp_path, capsys):
    from pipelines.cli import main

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"kubernetes": {"pipeline_root": "wasbs://c@acct/root"}}))
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--cluster", str(cluster)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wasbs://c@acct/root" in err[0] and "minio://" in err[0]
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize(
    ("settings", "endpoint", "secret"),
    [
        ({"pipeline_root": "minio://mlpipeline/v2/artifacts", "kfp_version": "2.14.0"},
         "http://minio-service.kubeflow:9000", "mlpipeline-minio-artifact"),
        ({"pipeline_root": "minio://mlpipeline/v2/artifacts", "kfp_version": "2.16.0"},
         "http://seaweedfs.kubeflow:9000", "mlpipeline-minio-artifact"),
        ({"pipeline_root": "s3://acme-ml/root", "object_store_endpoint": "https://s3.example:9000",
          "object_store_secret": "acme-s3"}, "https://s3.example:9000", "acme-s3"),
        ({"pipeline_root": "s3://acme-ml/root"}, None, None),  # AWS: the pod's IAM role
    ],
)  # fmt: skip
def test_every_task_gets_the_object_store_endpoint_and_keys(tmp_path, settings, endpoint, secret):
    from pipelines.cluster import ClusterSettings
    from pipelines.pipeline import compile_pipeline
    from tests.kfp_spec import all_tasks

    path = compile_pipeline(str(tmp_path / "p.yaml"), ClusterSettings.from_dict(settings))
    docs = list(yaml.safe_load_all(open(path).read()))
    spec, platform = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors = spec["deploymentSpec"]["executors"]
    tasks = all_tasks(spec)
    assert {"train", "push", "prepare", "fingerprint"} <= set(tasks)
    for name, task in tasks.items():
        executor = task["componentRef"]["name"].replace("comp-", "exec-")
        env = {e["name"]: e["value"] for e in executors[executor]["container"].get("env", [])}
        assert env.get("AWS_ENDPOINT_URL_S3") == endpoint, name
        secrets = platform.get(executor, {}).get("secretAsEnv", [])
        keys = {k["envVar"]: k["secretKey"] for s in secrets for k in s["keyToEnv"]}
        if secret:
            assert {s["secretName"] for s in secrets} == {secret}, name
            assert keys == {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}
        else:
            assert secrets == [], name


@pytest.mark.slow
def test_prepare_and_a_whole_run_from_s3_publish_a_verified_version(tmp_path, s3_server):
    """`visionpipe prepare --data s3://…`, then `visionpipe run` on the same photos pushing to
    an s3:// registry: the published version's manifest verifies from the bucket."""
    from components.push.core import verify

    photos = f"{s3_server}/e2e/photos"
    upload_folder(write_digit_images(tmp_path / "local", classes=(0, 1, 7), per_class=40), photos)
    prepared = subprocess.run(
        [VISIONPIPE, "prepare", "--data", photos, "--output", f"{s3_server}/e2e/dataset"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    stats = json.loads(storage.read_bytes(f"{s3_server}/e2e/dataset/stats.json"))
    assert stats["counts"]["total"] == 120
    registry = f"{s3_server}/e2e/registry"
    done = subprocess.run(
        [VISIONPIPE, "run", "--data", photos, "--output", str(tmp_path / "runs")]
        + ["--preset", "smoke", "--run-id", "s3", "--set", "train.epochs=6"]
        + ["--set", "export.formats=saved_model,tflite,onnx"]  # the contract: the bucket path
        + ["--set", "evaluate.min_accuracy=0", "--set", f"push.registry={registry}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "s3" / "summary.json").read_text())
    latest = json.loads(storage.read_bytes(f"{registry}/visionpipe-classifier/latest.json"))
    assert summary["artifacts"]["published"] == latest["uri"]
    assert latest["uri"].startswith(f"{registry}/visionpipe-classifier/")
    assert verify(latest["uri"]) == []
