"""k8s/components/collect: `visionpipe collect` behind the Service that push's default
payload-logger URL names, as the overlays render it.

A cluster cannot run here: `kubectl kustomize` renders, `visionpipe collect`'s own argparse
parser reads the container's arguments (after the kubelet's $(VAR) substitution, done here
the same way), and the Pod Security checks are tests/test_k8s.py's. The server side of the
probe (GET /healthz) is tested over HTTP in tests/test_serve_collect.py.
"""

import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from pipelines import k8s_check
from tests.test_k8s import OVERLAYS, needs_kubectl, restricted_container
from tests.test_serve import SERVE_PYTHON, run_in_serve_venv

ROOT = Path(__file__).parent.parent
pytestmark = needs_kubectl


def rendered(overlay: Path) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in k8s_check.render(overlay)}


def config_map(objects) -> dict:
    (found,) = [o for (kind, _), o in objects.items() if kind == "ConfigMap"]
    return found


def kubelet_args(container: dict, objects) -> list[str]:
    """The container's args as the kubelet hands them over: $(NAME) replaced by the
    variable's value (here from ConfigMap keys), left as written when NAME is not defined."""
    maps = {
        o["metadata"]["name"]: o["data"] for (kind, _), o in objects.items() if kind == "ConfigMap"
    }
    env = {}
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("configMapKeyRef")
        env[item["name"]] = maps[ref["name"]][ref["key"]] if ref else item["value"]
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a) for a in container["args"]]


def collect_pod(objects) -> dict:
    return objects[("Deployment", "visionpipe-collect")]["spec"]["template"]


def test_prod_runs_collect_behind_the_service_push_s_logger_url_names():
    from components.push.serving import COLLECT_URL

    objects = rendered(Path("k8s/overlays/prod"))
    url = urlsplit(COLLECT_URL)
    service = objects[("Service", url.hostname)]  # a bare name: this namespace's Service
    deployment = objects[("Deployment", "visionpipe-collect")]
    assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert service["metadata"]["namespace"] == "visionpipe-prod"
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == url.port
    pod = collect_pod(objects)
    labels = pod["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector and selector.items() <= labels.items()  # the Service selects the pods
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[port["targetPort"]] == url.port
    # one receiver: a request and its response are joined by id in one process's memory
    assert deployment["spec"]["replicas"] == 1
    policy = objects[("NetworkPolicy", "visionpipe-collect")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {}}]  # any pod of the namespace, nothing else
    assert [ports[p["port"]] for p in rule["ports"]] == [url.port]


def test_the_container_s_args_are_what_visionpipe_collect_accepts():
    """Parsed by collect's own parser, after substitution; the log location and the model
    are run.yaml's push.serving_log and push.registry/model_name (one setting, two readers)."""
    from components.infra import storage
    from components.push.serving import COLLECT_URL
    from components.serve.cli import build_collect_parser, log_settings

    objects = rendered(Path("k8s/overlays/prod"))
    (container,) = collect_pod(objects)["spec"]["containers"]
    assert container["command"] == ["visionpipe", "collect"]  # the image's entrypoint is serve
    args = kubelet_args(container, objects)
    assert not any("$(" in a for a in args), args
    parsed = build_collect_parser().parse_args(args)
    assert parsed.host == "0.0.0.0" and parsed.port == urlsplit(COLLECT_URL).port
    push = yaml.safe_load(config_map(objects)["data"]["run.yaml"])["push"]
    assert parsed.log == push["serving_log"]
    assert parsed.model == f"{push['registry']}/{push['model_name']}"
    storage.check_location(parsed.log, "--log")
    log_settings(parsed).validate()
    with pytest.raises(SystemExit):  # the parser is strict: a misspelled flag fails here
        build_collect_parser().parse_args([*args, "--log-dir", "x"])


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda o: o.name)
def test_an_overlay_whose_pushes_log_has_the_receiver(overlay):
    """A run.yaml with push.serving_log makes every Triton/TF Serving/OVMS service post to
    push.serving_log_url: the overlay must render collect there, writing to that location."""
    from components.push.config import PushConfig
    from components.push.serving import COLLECT_URL, payload_logger

    objects = rendered(overlay)
    push = yaml.safe_load(config_map(objects)["data"]["run.yaml"]).get("push") or {}
    logger = payload_logger(PushConfig.from_dict(push))
    if logger is None:
        assert overlay.name == "dev"  # dev publishes nothing; prod must not get here
        return
    assert logger["url"] == COLLECT_URL
    service = objects[("Service", urlsplit(logger["url"]).hostname)]
    assert service["spec"]["ports"][0]["port"] == urlsplit(logger["url"]).port
    (container,) = collect_pod(objects)["spec"]["containers"]
    args = kubelet_args(container, objects)
    assert args[args.index("--log") + 1] == push["serving_log"]


def test_collect_runs_the_serving_image_push_names(tmp_path):
    """Without an overlay's pin, the image is push.serving_image's default
    (visionpipe/visionpipe-serve:<version>); prod pins that name by digest, and neither
    names a registry host (a registry is the user's to add with newName)."""
    import components
    from components.push.config import PushConfig
    from components.push.serving import serving_image

    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    plain = tmp_path / "k8s" / "overlays" / "plain"
    plain.mkdir()
    (plain / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../../base]\ncomponents: [../../components/collect]\n"
    )
    (container,) = collect_pod(rendered(plain))["spec"]["containers"]
    assert (
        container["image"]
        == serving_image(PushConfig())
        == (f"visionpipe/visionpipe-serve:{components.__version__}")
    )
    (container,) = collect_pod(rendered(Path("k8s/overlays/prod")))["spec"]["containers"]
    name, digest = container["image"].split("@")
    assert name == "visionpipe/visionpipe-serve"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert k8s_check.check([plain]) == []


def test_the_collect_pod_passes_pod_security_restricted():
    objects = rendered(Path("k8s/overlays/prod"))
    namespace = objects[("Namespace", "visionpipe-prod")]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = collect_pod(objects)["spec"]
    container = restricted_container(pod, "Dockerfile.serve")
    # the identity that writes the buckets (Workload Identity needs no API token)
    assert pod["serviceAccountName"] == "visionpipe-runner"
    assert ("ServiceAccount", "visionpipe-runner") in objects
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


@pytest.mark.skipif(not SERVE_PYTHON.is_file(), reason="the serving venv is missing")
def test_the_probe_path_is_a_route_of_collect_s_app(tmp_path):
    """collect's real app, built in the serving venv (FastAPI, cloudevents), lists it."""
    objects = rendered(Path("k8s/overlays/prod"))
    (container,) = collect_pod(objects)["spec"]["containers"]
    script = (
        "import sys\n"
        "from components.serve.collect import Collector, app\n"
        "from components.serve.predlog import LogSettings, PredictionLog\n"
        "log = PredictionLog(LogSettings(sys.argv[1]), 'model', '')\n"
        "print(' '.join(r.path for r in app(Collector(log)).routes if 'GET' in r.methods))\n"
        "log.close()\n"
    )
    done = run_in_serve_venv(script, str(tmp_path / "log"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert container["livenessProbe"]["httpGet"]["path"] in done.stdout.split()


def test_a_broken_collect_deployment_fails_the_check(tmp_path):
    """`make k8s-check`'s schema validation reaches the component's objects."""
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    deployment = tmp_path / "k8s" / "components" / "collect" / "deployment.yaml"
    text = deployment.read_text()
    deployment.write_text(
        text.replace("          command: [", "          entrypoint: x\n          command: [")
    )
    service = tmp_path / "k8s" / "components" / "collect" / "service.yaml"
    service.write_text(service.read_text().replace("port: 8081", 'port: "8081"'))
    problems = k8s_check.check([tmp_path / "k8s" / "overlays" / "prod"])
    assert any(
        "Deployment/visionpipe-collect" in p and "entrypoint: unknown field" in p for p in problems
    ), problems
    assert any("Service/visionpipe-collect" in p and "port: expected int" in p for p in problems), (
        problems
    )
