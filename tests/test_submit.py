"""`visionpipe submit / schedule / compile --cluster` against a recording KFP API server.

The real kfp.Client makes every HTTP call; tests/kfp_server.py answers them
(a KFP cluster cannot run here) and records them for the assertions.
"""

import json

import pytest
import yaml

from components.infra.stages import STAGES
from pipelines.cli import main
from tests.kfp_server import KfpServer
from tests.kfp_spec import all_tasks, producer

CLUSTER = {
    "kubernetes": {
        "gpu_count": 2,
        "gpu_node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "node_selector": {"pool": "ml"},
        "image_pull_secrets": ["regcred"],
        "service_account": "visionpipe-runner",
        "pipeline_root": "gs://bucket/visionpipe",
        "resources": {"train": {"cpu": "6", "memory": "24G"}},
        "retries": 3,
        "shm_size": "4Gi",
    }
}


@pytest.fixture
def cluster_file(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(CLUSTER))
    return str(path)


def spec_of(package: str) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(package))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def test_submit_uploads_the_compiled_pipeline_and_starts_a_run(cluster_file, capsys):
    with KfpServer() as server:
        code = main(
            [
                "submit",
                "--host",
                server.url,
                "--experiment",
                "digits-nightly",
                "--data",
                "gs://bucket/images",
                "--set",
                "train.epochs=3",
                "--cluster",
                cluster_file,
                "--token",
                "s3cret",
                "--wait",
            ]
        )
        assert code == 0
        assert all(r.headers["authorization"] == "Bearer s3cret" for r in server.requests)
        (upload,) = server.calls("POST", r"/pipelines/upload$")
        assert upload.query["name"] == ["visionpipe"]
        spec, platform = spec_of(upload.files["uploadfile"].decode())
        assert spec["pipelineInfo"]["name"] == "visionpipe"
        assert spec["defaultPipelineRoot"] == "gs://bucket/visionpipe"
        assert set(spec["root"]["dag"]["tasks"]) == {"fingerprint", "changes", "condition-1"}
        assert set(all_tasks(spec)) == {"fingerprint", "changes", *STAGES}
        train_k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
        assert train_k8s["imagePullSecret"][0]["secretName"] == "regcred"

        (experiment,) = server.calls("POST", r"/experiments$")
        assert experiment.json["display_name"] == "digits-nightly"
        (run,) = server.calls("POST", r"/runs$")
        assert run.json["experiment_id"] == experiment_id(server)
        assert run.json["service_account"] == "visionpipe-runner"
        assert run.json["pipeline_version_reference"]["pipeline_id"] == upload_id(server)
        runtime = run.json["runtime_config"]
        assert runtime["pipeline_root"] == "gs://bucket/visionpipe"
        params = runtime["parameters"]
        assert params["data"] == "gs://bucket/images"
        assert params["train_config"]["epochs"] == 3
        assert "cache_key" not in params  # freshness comes from the fingerprint task
        assert server.calls("GET", r"/runs/run-\d+$")  # --wait polled the run
        out = capsys.readouterr().out
        assert "ended SUCCEEDED" in out

        # the same pipeline again: a new version of it, not a second pipeline
        assert main(["submit", "--host", server.url, "--token", "s3cret"]) == 0
        assert len(server.calls("POST", r"/pipelines/upload$")) == 1
        (version,) = server.calls("POST", r"/pipelines/upload_version$")
        assert version.query["pipelineid"] == [upload_id(server)]
        second_run = server.calls("POST", r"/runs$")[-1]
        assert (
            second_run.json["pipeline_version_reference"]["pipeline_version_id"]
            == server.versions[upload_id(server)][-1]["pipeline_version_id"]
        )


def upload_id(server) -> str:
    return next(iter(server.pipelines))


def experiment_id(server) -> str:
    return next(iter(server.experiments))


def test_submit_wait_exits_nonzero_when_the_run_fails():
    with KfpServer(final_run_state="FAILED") as server:
        assert main(["submit", "--host", server.url, "--wait"]) == 1


def test_schedule_creates_a_recurring_run_keyed_on_the_data(cluster_file):
    with KfpServer() as server:
        code = main(
            [
                "schedule",
                "--host",
                server.url,
                "--cron",
                "0 30 2 * * 1-5",
                "--name",
                "weekday retrain",
                "--data",
                "gs://bucket/images",
                "--cluster",
                cluster_file,
            ]
        )
        assert code == 0
        (recurring,) = server.calls("POST", r"/recurringruns$")
        body = recurring.json
        assert body["display_name"] == "weekday retrain"
        assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * 1-5"
        assert int(body["max_concurrency"]) == 1
        assert body["no_catchup"] is True
        assert body["mode"] == "ENABLE"
        assert body["service_account"] == "visionpipe-runner"
        assert body["runtime_config"]["parameters"]["data"] == "gs://bucket/images"
        assert body["experiment_id"] == experiment_id(server)
        # the uploaded spec keys prepare's cache on the data's fingerprint, not the clock
        (upload,) = server.calls("POST", r"/pipelines/upload$")
        spec, _ = spec_of(upload.files["uploadfile"].decode())
        assert producer(spec, "prepare", "fingerprint")["producerTask"] == "fingerprint"
        assert "schedule_time" not in upload.files["uploadfile"].decode()


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 3 * * *", "has 5 fields"),
        ("0 0 25 * * *", "hour 25 is outside 0-23"),
        ("every day", "expected 6 space-separated fields"),
    ],
)
def test_bad_cron_is_refused_with_exit_2_before_any_request(cron, message, capsys):
    with KfpServer() as server:
        code = main(["schedule", "--host", server.url, "--cron", cron])
        assert code == 2
        assert message in capsys.readouterr().err
        assert server.requests == []


def test_compile_bakes_the_cluster_settings_in(tmp_path, cluster_file):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(out), "--cluster", cluster_file]) == 0
    spec, platform = spec_of(out.read_text())
    tasks = all_tasks(spec)
    assert set(tasks) == {"fingerprint", "changes", *STAGES}
    for task in tasks.values():
        assert task["retryPolicy"]["maxRetryCount"] == 3
        assert task["retryPolicy"]["backoffDuration"] == "30s"
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert train["accelerator"]["resourceCount"] == "2"
    assert train["cpuLimit"] == 6 and train["memoryLimit"] == 24
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-train"]["nodeSelector"]["labels"] == {
        "pool": "ml",
        "cloud.google.com/gke-accelerator": "nvidia-l4",
    }
    assert executors["exec-prepare"]["nodeSelector"]["labels"] == {"pool": "ml"}
    assert "tolerations" not in executors["exec-prepare"]
    assert executors["exec-train"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert executors["exec-train"]["emptyDirMounts"][0] == {
        "medium": "Memory",
        "mountPath": "/dev/shm",
        "sizeLimit": "4Gi",
        "volumeName": "dshm",
    }
    assert spec["defaultPipelineRoot"] == "gs://bucket/visionpipe"
    assert producer(spec, "prepare", "fingerprint")["producerTask"] == "fingerprint"


def test_bad_cluster_settings_are_refused(tmp_path, capsys):
    path = tmp_path / "cluster.yaml"
    path.write_text(json.dumps({"kubernetes": {"gpu_count": 1, "pipeline_root": "/local"}}))
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--cluster", str(path)]) == 2
    assert "pipeline_root" in capsys.readouterr().err
    path.write_text(json.dumps({"kubernetes": {"gpus": 1}}))
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--cluster", str(path)]) == 2
    assert "unknown kubernetes config key 'gpus'" in capsys.readouterr().err


DIGEST = "sha256:" + "ab" * 32


def executor_images(path) -> dict[str, str]:
    spec, _ = spec_of(path.read_text())
    return {
        name.removeprefix("exec-"): executor["container"]["image"]
        for name, executor in spec["deploymentSpec"]["executors"].items()
    }


def test_stage_images_come_from_one_place_at_compile_time(tmp_path, monkeypatch):
    """The environment (what the CronJob gets from kustomize's images:) or the cluster
    file names the images; they are read when compiling, not when Python starts."""
    monkeypatch.setenv("VISIONPIPE_IMAGE", f"registry.example/team/visionpipe-cpu@{DIGEST}")
    monkeypatch.setenv("VISIONPIPE_GPU_IMAGE", f"registry.example/team/visionpipe-gpu@{DIGEST}")
    out = tmp_path / "env.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    images = executor_images(out)
    assert images.pop("train") == f"registry.example/team/visionpipe-gpu@{DIGEST}"
    assert set(images.values()) == {f"registry.example/team/visionpipe-cpu@{DIGEST}"}
    assert set(images) == {
        "fingerprint",
        "changes",
        "prepare",
        "validate",
        "evaluate",
        "export",
        "push",
    }

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        yaml.safe_dump({"kubernetes": {"gpu_count": 0, "cpu_image": f"other/cpu@{DIGEST}"}})
    )
    out = tmp_path / "cpu.yaml"
    assert main(["compile", "--output", str(out), "--cluster", str(cluster)]) == 0
    # gpu_count 0: training runs in the CPU image, without an accelerator request
    assert set(executor_images(out).values()) == {f"other/cpu@{DIGEST}"}
    spec, _ = spec_of(out.read_text())
    assert (
        "accelerator"
        not in spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    )


def test_a_bad_image_reference_is_refused(tmp_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"kubernetes": {"gpu_image": "Not An Image"}}))
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--cluster", str(cluster)]) == 2
    assert "gpu_image" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_a_local_folder_is_refused_before_anything_is_uploaded(tmp_path, capsys, command):
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    extra = ["--cron", "0 0 3 * * *"] if command == "schedule" else []
    with KfpServer() as server:
        code = main([command, "--host", server.url, "--data", str(tmp_path / "photos"), *extra])
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a local path" in err[0] and "--upload" in err[0]
        assert server.requests == []  # nothing reached the server


def test_upload_without_a_gs_pipeline_root_is_refused(tmp_path, capsys):
    from tests.conftest import write_digit_images

    data = write_digit_images(tmp_path / "photos", classes=(1, 2), per_class=3)
    with KfpServer() as server:
        assert main(["submit", "--host", server.url, "--data", str(data), "--upload"]) == 2
        assert "pipeline_root" in capsys.readouterr().err and server.requests == []


@pytest.mark.parametrize("store", ["gcs_emulator", "s3_server"])
def test_upload_copies_a_folder_once_and_submits_the_copy(tmp_path, store, capsys, request):
    from components.infra import storage
    from components.vision.fingerprint import fingerprint
    from tests.conftest import write_digit_images

    data = write_digit_images(tmp_path / "photos", classes=(1, 2), per_class=4)
    bucket = request.getfixturevalue(store)
    if store == "s3_server":  # a stock Kubeflow's root: minio://, the bucket's S3 API
        bucket = bucket.replace("s3://", "minio://")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"kubernetes": {"pipeline_root": f"{bucket}/root"}}))
    args = ["--data", str(data), "--upload", "--cluster", str(cluster)]
    with KfpServer() as server:
        assert main(["submit", "--host", server.url, *args]) == 0
        (run,) = server.calls("POST", r"/runs$")
        uri = run.json["runtime_config"]["parameters"]["data"]
        assert uri == f"{bucket}/root/data/{fingerprint(str(data))}"
        copied = sorted(storage.relative(u, uri) for u in storage.list_files(uri))
        assert copied == sorted(p.relative_to(data).as_posix() for p in data.rglob("*.*"))
        assert (
            storage.read_bytes(f"{uri}/digit_1/000.png") == (data / "digit_1/000.png").read_bytes()
        )
        storage.delete(f"{uri}/digit_1/000.png")  # a second upload of the same data copies nothing
        capsys.readouterr()
        assert main(["schedule", "--host", server.url, "--cron", "0 0 3 * * *", *args]) == 0
        assert "already uploaded" in capsys.readouterr().err
        assert not storage.exists(f"{uri}/digit_1/000.png")
        (recurring,) = server.calls("POST", r"/recurringruns$")
        assert recurring.json["runtime_config"]["parameters"]["data"] == uri


def test_upload_copies_a_manifest_and_its_files(tmp_path, gcs_emulator):
    from components.infra import storage
    from components.vision.sources import list_source
    from tests.conftest import write_digit_images

    images = write_digit_images(tmp_path / "elsewhere", classes=(1, 2), per_class=4)
    rows = ["uri,label,site"] + [
        f"{p},{p.parent.name},s{n % 2}" for n, p in enumerate(sorted(images.rglob("*.*")))
    ]
    manifest = tmp_path / "lists" / "labels.csv"
    manifest.parent.mkdir()
    manifest.write_text("\n".join(rows) + "\n")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"kubernetes": {"pipeline_root": f"{gcs_emulator}/r2"}}))
    with KfpServer() as server:
        code = main(
            ["submit", "--host", server.url, "--data", str(manifest), "--upload"]
            + ["--cluster", str(cluster)]
        )
        assert code == 0
        (run,) = server.calls("POST", r"/runs$")
    uri = run.json["runtime_config"]["parameters"]["data"]
    assert uri.startswith(f"{gcs_emulator}/r2/data/manifest-") and uri.endswith("/labels.csv")
    listing = list_source(uri)  # the copy lists like the original, from the bucket
    assert len(listing.items) == 8 and listing.metadata_columns == ["site"]
    assert all(storage.exists(item.uri) for item in listing.items)
    assert sorted(i.label for i in listing.items) == sorted(
        p.parent.name for p in images.rglob("*.*")
    )


def test_validate_can_run_in_the_gpu_image_when_the_cluster_says_so(tmp_path):
    """gpu_tasks: [validate, train] gives validate the GPU image, the accelerator and the GPU
    node settings; by default only train has them."""
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump(
            {"kubernetes": {**CLUSTER["kubernetes"], "gpu_tasks": ["validate", "train"]}}
        )
    )
    out = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(out), "--cluster", str(path)]) == 0
    spec, platform = spec_of(out.read_text())
    executors = spec["deploymentSpec"]["executors"]
    for task in ("validate", "train"):
        container = executors[f"exec-{task}"]["container"]
        assert container["resources"]["accelerator"]["resourceCount"] == "2", task
        assert "visionpipe-gpu" in container["image"], task
    assert "accelerator" not in executors["exec-evaluate"]["container"].get("resources", {})
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-validate"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    path.write_text(yaml.safe_dump({"kubernetes": {"gpu_tasks": ["push"]}}))
    assert main(["compile", "--output", str(out), "--cluster", str(path)]) == 2


def test_task_pods_run_as_the_images_user_when_asked(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump({"kubernetes": {"task_run_as_user": 10001, "kfp_version": "2.16.0"}})
    )
    out = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(out), "--cluster", str(path)]) == 0
    _, platform = spec_of(out.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) >= {f"exec-{t}" for t in ("fingerprint", "changes", *STAGES)}
    for executor in executors.values():
        context = executor["securityContext"]
        assert context == {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}
    path.write_text(yaml.safe_dump({"kubernetes": {"task_run_as_user": 0}}))
    assert main(["compile", "--output", str(out), "--cluster", str(path)]) == 0
    _, platform = spec_of(out.read_text())
    executors = (platform.get("platforms") or {}).get("kubernetes", {}).get("deploymentSpec", {})
    assert all("securityContext" not in e for e in executors.get("executors", {}).values())
