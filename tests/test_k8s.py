"""k8s/: every kustomize overlay renders and validates against the Kubernetes API schema.

A cluster cannot run here; `kubectl kustomize` (no cluster needed) renders, and the
`kubernetes` client's models are the schema.
"""

import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import k8s_check

OVERLAYS = sorted((Path(__file__).parent.parent / "k8s" / "overlays").iterdir())
needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl is not installed here (it renders the kustomize overlays)",
)


@needs_kubectl
def test_every_overlay_renders_and_validates():
    assert {o.name for o in OVERLAYS} == {"dev", "prod"}
    assert k8s_check.check(OVERLAYS) == []


@needs_kubectl
def test_prod_overlay_content():
    objects = {o["kind"]: o for o in k8s_check.render(Path("k8s/overlays/prod"))}
    assert set(objects) == {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "CronJob",
        # k8s/components/collect (tests/test_k8s_collect.py)
        "Deployment",
        "Service",
        "NetworkPolicy",
    }
    assert objects["Namespace"]["metadata"]["name"] == "visionpipe-prod"
    assert all(
        o["metadata"].get("namespace") == "visionpipe-prod"
        for kind, o in objects.items()
        if kind != "Namespace"
    )
    annotations = objects["ServiceAccount"]["metadata"]["annotations"]
    assert annotations["iam.gke.io/gcp-service-account"].startswith("visionpipe-prod@")
    assert objects["RoleBinding"]["subjects"][0]["namespace"] == "visionpipe-prod"
    job = objects["CronJob"]["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "visionpipe-runner"
    container = pod["containers"][0]
    kustomization = yaml.safe_load(Path("k8s/overlays/prod/kustomization.yaml").read_text())
    pinned = {
        i["name"]: f"{i.get('newName', i['name'])}@{i['digest']}" for i in kustomization["images"]
    }  # the one place: overlays/prod's images:, by digest
    assert container["image"] == pinned["visionpipe/visionpipe-cpu"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["VISIONPIPE_IMAGE"] == pinned["visionpipe/visionpipe-cpu"]
    assert env["VISIONPIPE_GPU_IMAGE"] == pinned["visionpipe/visionpipe-gpu"]
    assert "visionpipe submit --in-cluster" in container["command"][-1]
    config_map = objects["ConfigMap"]
    assert container["envFrom"][0]["configMapRef"]["name"] == config_map["metadata"]["name"]
    cluster = yaml.safe_load(config_map["data"]["cluster.yaml"])["kubernetes"]
    assert cluster["gpu_count"] == 1 and cluster["pipeline_root"].startswith("gs://")


def test_validator_finds_problems_at_any_depth():
    cron_job = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "x"},
        "spec": {
            "schedule": "0 3 * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"image": "i", "resources": {"limits": {"cpu": 2}}, "bogus": 1}
                            ],
                            "restartPolicy": "Never",
                        }
                    }
                }
            },
        },
    }
    problems = k8s_check.validate(cron_job, k8s_check.model_for(cron_job), "CronJob/x")
    text = "\n".join(problems)
    assert "containers[0].bogus: unknown field for V1Container" in text
    assert "`name`, must not be `None`" in text  # a container needs a name
    assert "limits.cpu: expected str, got int 2" in text  # quantities are strings
    assert k8s_check.model_for(cron_job) == "V1CronJob"


@needs_kubectl
def test_a_broken_overlay_fails_the_check(tmp_path):
    shutil.copytree(Path("k8s"), tmp_path / "k8s")
    cron = tmp_path / "k8s" / "base" / "cronjob.yaml"
    cron.write_text(
        cron.read_text().replace(
            "restartPolicy: Never", "restartPolicy: Never\n          replicas: 2"
        )
    )
    cluster = tmp_path / "k8s" / "overlays" / "dev" / "cluster.yaml"
    cluster.write_text("kubernetes:\n  gpu_count: -1\n")
    problems = k8s_check.check([tmp_path / "k8s" / "overlays" / "dev"])
    assert any("spec.replicas: unknown field for V1PodSpec" in p for p in problems)
    assert any("data.cluster.yaml" in p and "gpu_count" in p for p in problems)


@needs_kubectl
def test_the_stage_images_reach_the_pipeline_the_cronjob_submits(tmp_path, monkeypatch):
    """What the CronJob's container compiles, with the environment kustomize gave it."""
    from pipelines.pipeline import compile_pipeline

    objects = {o["kind"]: o for o in k8s_check.render(Path("k8s/overlays/prod"))}
    container = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    for item in container["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    path = compile_pipeline(str(tmp_path / "nightly.yaml"))
    spec = next(yaml.safe_load_all(Path(path).read_text()))
    images = {n: e["container"]["image"] for n, e in spec["deploymentSpec"]["executors"].items()}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert images.pop("exec-train") == env["VISIONPIPE_GPU_IMAGE"]
    assert set(images.values()) == {env["VISIONPIPE_IMAGE"]} == {container["image"]}


@needs_kubectl
def test_a_cronjob_without_both_stage_images_fails_the_check(tmp_path):
    shutil.copytree(Path("k8s"), tmp_path / "k8s")
    cron = tmp_path / "k8s" / "base" / "cronjob.yaml"
    text = cron.read_text()
    cron.write_text(
        text.replace(
            "                - name: VISIONPIPE_GPU_IMAGE\n"
            "                  value: visionpipe/visionpipe-gpu\n",
            "",
        )
    )
    problems = k8s_check.check([tmp_path / "k8s" / "overlays" / "prod"])
    assert any("has no VISIONPIPE_GPU_IMAGE" in p for p in problems), problems
    cluster = tmp_path / "k8s" / "overlays" / "prod" / "cluster.yaml"
    cluster.write_text(cluster.read_text() + "  gpu_image: other/gpu:1\n")
    problems = k8s_check.check([tmp_path / "k8s" / "overlays" / "prod"])
    assert any("gpu_image is set" in p for p in problems), problems


@needs_kubectl
def test_the_printed_digests_pasted_into_prod_set_every_image(tmp_path):
    """`make push-images` prints the prod overlay's images: entries; pasted in, they set the
    submitter pod and both stage images (docker and a registry are not needed for this)."""
    from pipelines.images import pin_snippet

    cpu = "registry.example/team/visionpipe-cpu@sha256:" + "1" * 64
    gpu = "registry.example/team/visionpipe-gpu@sha256:" + "2" * 64
    snippet = pin_snippet(cpu, gpu)
    shutil.copytree(Path("k8s"), tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlays" / "prod" / "kustomization.yaml"
    kustomization = yaml.safe_load(overlay.read_text())
    kustomization["images"] = yaml.safe_load(snippet)["images"]
    overlay.write_text(yaml.safe_dump(kustomization))
    objects = {o["kind"]: o for o in k8s_check.render(overlay.parent)}
    container = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["image"] == env["VISIONPIPE_IMAGE"] == cpu
    assert env["VISIONPIPE_GPU_IMAGE"] == gpu
    assert f"# export VISIONPIPE_GPU_IMAGE={gpu}" in snippet
    assert k8s_check.check([overlay.parent]) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda o: o.name)
def test_the_cronjob_pod_passes_pod_security_restricted(overlay):
    """What Pod Security "restricted" admits (and checkov, in `make k8s-check`, checks):
    the namespace enforces it, and the pod meets it as the image runs it."""
    objects = {o["kind"]: o for o in k8s_check.render(overlay)}
    labels = objects["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = restricted_container(pod, "Dockerfile")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    token = volumes[mounts["/var/run/secrets/kubeflow/pipelines"]]["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert {"name": "HOME", "value": "/tmp"} in container["env"]


def restricted_container(pod: dict, dockerfile: str) -> dict:
    """The pod's one container, after checking what Pod Security "restricted" asks of the
    pod and of it, as the image (docker/<dockerfile>'s numeric USER) runs; no API token,
    a read-only root filesystem with an emptyDir at /tmp."""
    import re

    text = (Path(__file__).parent.parent / "docker" / dockerfile).read_text()
    uid, gid = map(int, re.search(r"^USER (\d+):(\d+)$", text, re.M).groups())
    assert uid >= 10000
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["seccompProfile"]["type"] == "RuntimeDefault"
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) & set(requests)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    return container
