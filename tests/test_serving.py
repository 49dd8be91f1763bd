"""Push writes a KServe InferenceService and the runtime's model folder beside every
version; both are checked offline (KServe's CRD schema, ONNX Runtime and TensorFlow
loading the published files). No KServe cluster runs here."""

import json

import numpy as np
import pytest
import yaml

from components.infra.errors import UserError
from components.push import serving
from components.push.config import PushConfig
from pipelines import k8s_check


def service(**overrides):
    config = PushConfig(**overrides)
    return serving.service_for(config, "gs://bucket/models/m/v1", "v1")


def test_every_runtime_on_cpu_and_gpu_matches_the_schema():
    assert k8s_check.check_serving([]) == []
    gpu = service(serving="triton", serving_gpus=2)
    limits = gpu["spec"]["predictor"]["model"]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"
    model = service(serving="tensorflow")["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "tensorflow"}
    assert model["runtime"] == "kserve-tensorflow-serving" and model["protocolVersion"] == "v1"
    assert model["storageUri"] == "gs://bucket/models/m/v1/serving/tensorflow"


def test_the_schema_check_catches_what_the_api_server_would_refuse():
    broken = service()
    model = broken["spec"]["predictor"]["model"]
    model["storageUrl"] = model.pop("storageUri")  # a typo: an unknown field
    broken["spec"]["predictor"]["minReplicas"] = "one"
    broken["metadata"]["name"] = "Visionpipe_Classifier"
    problems = serving.validate(broken)
    assert any("'storageUrl' was unexpected" in p for p in problems)
    assert any("minReplicas" in p and "integer" in p for p in problems)
    assert any("RFC 1035" in p for p in problems)
    local = service()
    local["spec"]["predictor"]["model"]["storageUri"] = "/home/me/registry/m/v1"
    assert any("not a location KServe can read" in p for p in serving.validate(local))
    assert serving.validate(local, remote=False) == []


def test_the_ovms_service_runs_an_ir_at_the_precision_written_in_it(tmp_path):
    """OVMS's plugin_config (a documented model option, appended by KServe to the
    kserve-ovms runtime's args) carries the IR's rt_info model_info/inference_precision;
    no other runtime gets arguments. A tiny real IR written by OpenVINO stands for one."""
    import openvino as ov
    from openvino import opset13 as ops

    image = ops.parameter([1, 4], np.float32, name="image")
    model = ov.Model([ops.relu(image)], [image], "tiny")
    model.set_rt_info("bf16", ["model_info", "inference_precision"])
    ov.save_model(model, str(tmp_path / "model.xml"))
    config = PushConfig(serving="openvino")
    written = serving.service_for(config, "gs://b/m/v1", "v1", tmp_path / "model.xml")
    args = written["spec"]["predictor"]["model"]["args"]
    assert args == ['--plugin_config={"INFERENCE_PRECISION_HINT":"bf16"}']
    assert serving.validate(written) == []
    # an IR that says nothing, or no file at hand (k8s checks): f32, what export verifies at
    assert service(serving="openvino")["spec"]["predictor"]["model"]["args"] == [
        '--plugin_config={"INFERENCE_PRECISION_HINT":"f32"}'
    ]
    assert "args" not in service(serving="triton")["spec"]["predictor"]["model"]


def test_service_names_are_dns_labels():
    assert serving.service_name("visionpipe-classifier") == "visionpipe-classifier"
    assert serving.service_name("My_Model.v2") == "my-model-v2"
    assert serving.service_name("2025-digits") == "m-2025-digits"
    assert len(serving.service_name("x" * 100)) <= 45


def test_config_refuses_what_cannot_be_served():
    with pytest.raises(UserError, match="serving"):
        PushConfig.from_dict({"serving": "torchserve"})
    with pytest.raises(UserError, match="serving_runtime_version"):
        PushConfig.from_dict({"serving": "tensorflow", "serving_gpus": 1})
    with pytest.raises(UserError, match="serving_memory"):
        PushConfig.from_dict({"serving_memory": "two gigs"})


@pytest.mark.slow
def test_triton_version_in_a_folder(tmp_path, exported, evaluation):
    """The published Triton repository holds the verified ONNX file, and its config names
    the graph's own inputs and outputs."""
    import onnxruntime as ort

    from components.push.core import run
    from components.vision.packed import onnx_signature

    registry = tmp_path / "registry"
    result = run(PushConfig(registry=str(registry), version="v1"), exported, evaluation)
    version = registry / "visionpipe-classifier" / "v1"
    manifest = json.loads((version / "manifest.json").read_text())
    paths = {e["path"] for e in manifest["files"]}
    folder = "serving/triton/visionpipe-classifier"
    assert {f"{folder}/config.pbtxt", f"{folder}/labels.txt", f"{folder}/1/model.onnx"} <= paths
    assert "inferenceservice.yaml" in paths and result["pushed"]
    assert manifest["serving"]["runtime"] == "triton"
    published = yaml.safe_load((version / "inferenceservice.yaml").read_text())
    assert serving.validate(published, remote=False) == []
    assert published["spec"]["predictor"]["model"]["storageUri"] == f"{version}/serving/triton"
    assert (version / folder / "1" / "model.onnx").read_bytes() == (
        exported / "model.onnx"
    ).read_bytes()
    config = (version / folder / "config.pbtxt").read_text()
    signature = onnx_signature(exported / "model.onnx")
    for name, _shape in signature["inputs"] + signature["outputs"]:
        assert f'name: "{name}"' in config
    assert 'platform: "onnxruntime_onnx"' in config and "dims: [ -1, -1, 3 ]" in config
    assert "dims: [ 10 ]" in config and 'label_filename: "labels.txt"' in config
    session = ort.InferenceSession(str(version / folder / "1" / "model.onnx"))
    image = np.zeros((2, 32, 32, 3), np.float32)
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: image})
    assert probabilities.shape == (2, 10)


@pytest.mark.slow
def test_tensorflow_version_in_a_bucket(gcs_emulator, tmp_path, exported, evaluation):
    """Published to a bucket (the emulator): a remote storageUri, a TF Serving base path
    with version 1, and a published file that k8s-check accepts."""
    import tensorflow as tf

    from components.infra import storage
    from components.push.core import run

    config = PushConfig(
        registry=f"{gcs_emulator}/served",
        version="v2",
        serving="tensorflow",
        serving_gpus=1,
        serving_runtime_version="2.6.2-gpu",
    )
    run(config, exported, evaluation)
    version = f"{gcs_emulator}/served/visionpipe-classifier/v2"
    text = storage.read_bytes(f"{version}/inferenceservice.yaml").decode()
    local = tmp_path / "inferenceservice.yaml"
    local.write_text(text)
    assert k8s_check.check_serving([local]) == []
    model = yaml.safe_load(text)["spec"]["predictor"]["model"]
    assert model["storageUri"] == f"{version}/serving/tensorflow"
    assert model["runtimeVersion"] == "2.6.2-gpu"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    base = storage.download_tree(model["storageUri"], tmp_path / "base")
    serve = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    out = serve(image=tf.zeros((1, 32, 32, 3)))["probabilities"]
    assert out.shape == (1, 10)
    # a broken published file fails the check with its path
    local.write_text(text.replace("storageUri", "storageURI"))
    assert k8s_check.main([str(local)]) == 2


def test_a_missing_serving_file_is_refused_before_a_version_is_claimed(tmp_path):
    from components.push.core import run

    export, evaluation = tmp_path / "export", tmp_path / "evaluation"
    export.mkdir()
    evaluation.mkdir()
    (export / "model.tflite").write_bytes(b"tflite")
    (export / "parity.json").write_text(json.dumps({"tflite": {"passed": True}}))
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": True, "reasons": []}))
    registry = tmp_path / "registry"
    with pytest.raises(UserError, match="push.serving=triton needs model.onnx"):
        run(PushConfig(registry=str(registry)), export, evaluation)
    assert not registry.exists() or not any(registry.rglob(".claimed"))


def container(written: dict) -> dict:
    (found,) = written["spec"]["predictor"]["containers"]
    return found


def test_the_visionpipe_service_runs_serve_from_the_serving_image():
    """push.serving: visionpipe is a KServe custom predictor: `visionpipe serve` on the
    storage initializer's copy of the version's serving folder, v2 health probes on 8080,
    the stage images' hardening, and the CRD schema (remote storage checked too)."""
    import components

    written = service(serving="visionpipe", serving_cpu="2", serving_memory="1Gi")
    assert serving.validate(written) == []
    predictor = written["spec"]["predictor"]
    assert "model" not in predictor and "logger" not in predictor
    found = container(written)
    assert found["name"] == "kserve-container"  # what KServe's storage initializer looks for
    assert found["image"] == f"visionpipe/visionpipe-serve:{components.__version__}"
    assert found["command"] == ["visionpipe", "serve"]
    args = found["args"]
    assert args[0] == "/mnt/models" and "--log" not in args
    assert args[args.index("--port") + 1] == "8080" and args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--version") + 1] == "v1"
    assert args[args.index("--name") + 1] == "visionpipe-classifier"
    env = {e["name"]: e["value"] for e in found["env"]}
    assert env["STORAGE_URI"] == "gs://bucket/models/m/v1/serving/visionpipe"
    assert found["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert found["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert found["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert found["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    security = found["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    named = service(serving="visionpipe", serving_image="team/serve@sha256:" + "a" * 64)
    assert container(named)["image"] == "team/serve@sha256:" + "a" * 64


def test_the_visionpipe_service_s_mistakes_are_caught_by_the_schema():
    broken = service(serving="visionpipe")
    found = container(broken)
    found["readinesProbe"] = found.pop("readinessProbe")  # a typo: an unknown field
    found["ports"][0]["containerPort"] = "8080"
    problems = serving.validate(broken)
    assert any("'readinesProbe' was unexpected" in p for p in problems)
    assert any("containerPort" in p and "integer" in p for p in problems)
    local = service(serving="visionpipe")
    container(local)["env"][0]["value"] = "/home/me/registry/m/v1/serving/visionpipe"
    assert any("not a location KServe can read" in p for p in serving.validate(local))


def test_serving_log_adds_kserve_s_payload_logger_pointed_at_collect():
    """Triton, TF Serving and OVMS do not log: with push.serving_log their service gets
    spec.predictor.logger (mode all) posting to `visionpipe collect`; a visionpipe service
    logs itself (--log, its format and --log-images as set)."""
    for runtime in ("triton", "tensorflow", "openvino"):
        written = service(serving=runtime, serving_log="gs://b/predictions")
        assert serving.validate(written) == []
        assert written["spec"]["predictor"]["logger"] == {
            "mode": "all",
            "url": "http://visionpipe-collect:8081/",
        }
        notes = written["metadata"]["annotations"]
        assert notes["visionpipe/prediction-log"] == "gs://b/predictions"
        assert "logger" not in service(serving=runtime)["spec"]["predictor"]
    url = "http://collect.monitoring.svc.cluster.local:8081/"
    own = service(serving="triton", serving_log="s3://b/p", serving_log_url=url)
    assert own["spec"]["predictor"]["logger"]["url"] == url
    own["spec"]["predictor"]["logger"]["mode"] = "everything"  # the CRD's enum refuses it
    assert any("logger.mode" in p for p in serving.validate(own))
    itself = service(
        serving="visionpipe",
        serving_log="gs://b/predictions",
        serving_log_format="parquet",
        serving_log_images=True,
    )
    assert serving.validate(itself) == [] and "logger" not in itself["spec"]["predictor"]
    args = container(itself)["args"]
    assert args[args.index("--log") + 1] == "gs://b/predictions"
    assert args[args.index("--log-format") + 1] == "parquet" and "--log-images" in args


def test_config_refuses_a_visionpipe_service_it_cannot_run():
    with pytest.raises(UserError, match="serving_gpus"):
        PushConfig.from_dict({"serving": "visionpipe", "serving_gpus": 1})
    with pytest.raises(UserError, match="serving_log_format"):
        PushConfig.from_dict({"serving_log_format": "csv"})
    with pytest.raises(UserError, match="serving_log_url"):
        PushConfig.from_dict({"serving_log": "gs://b/p", "serving_log_url": "collect:8081"})
    with pytest.raises(UserError, match="serving_log"):
        PushConfig.from_dict({"serving_log": "ftp://host/logs"})


def test_push_copies_what_serve_reads_beside_its_file():
    """push.serving: visionpipe copies serve's BESIDE files (and push adds the profile):
    the two lists, kept in two packages that may not import each other, agree."""
    from components.serve import model
    from components.vision import monitoring

    assert set(serving.SERVE_BESIDE) == set(model.BESIDE) | set(model.EXTRA) - {
        monitoring.PROFILE_FILE
    }
