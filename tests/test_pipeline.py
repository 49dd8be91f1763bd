"""The KFP pipeline: the compiled YAML, and whole runs with kfp.local's SubprocessRunner."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

import components
from tests.conftest import VISIONPIPE, write_digit_images
from tests.kfp_spec import all_tasks, producer


def visionpipe(*args, cwd=None, tracked=False):
    """The CLI as users run it; `tracked`: with the default embedded MLflow store (the
    suite turns tracking off elsewhere, tests/conftest.py)."""
    env = {**os.environ}
    if tracked:
        env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([VISIONPIPE, *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    done = visionpipe("compile", "--output", str(path))
    assert done.returncode == 0, done.stderr
    return next(yaml.safe_load_all(path.read_text()))  # the spec; then the platform spec


def test_compiled_tasks_and_edges(compiled):
    root = compiled["root"]["dag"]["tasks"]
    assert set(root) == {"fingerprint", "changes", "condition-1"}
    assert root["changes"]["dependentTasks"] == ["fingerprint"]
    # nothing new, nothing spent: every stage sits under the changes task's decision
    changed = root["condition-1"]
    assert changed["taskInfo"]["name"] == "changed"
    assert "changes" in changed["dependentTasks"]
    assert (
        changed["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--changes-Output'] == 'changed'"
    )
    stages = compiled["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(stages) == {"prepare", "validate", "train", "evaluate", "condition-2"}
    assert stages["validate"]["dependentTasks"] == ["prepare"]
    # train waits for validate, which fails the run on anomalies before any training
    assert sorted(stages["train"]["dependentTasks"]) == ["prepare", "validate"]
    assert sorted(stages["evaluate"]["dependentTasks"]) == ["prepare", "train"]
    condition = stages["condition-2"]
    assert "evaluate" in condition["dependentTasks"]
    assert "pipelinechannel--evaluate-Output" in condition["triggerPolicy"]["condition"]
    inner = compiled["components"]["comp-condition-2"]["dag"]["tasks"]
    assert set(inner) == {"export", "push"}
    assert inner["push"]["dependentTasks"] == ["export"]
    # validate compares with, and push publishes, what the changes task decided
    for task in (stages["validate"], inner["push"]):
        assert "changes" in task["inputs"]["artifacts"]["changes"]["componentInputArtifact"]


@pytest.mark.parametrize("scheduled", [False, True])
def test_prepare_is_cached_on_an_uncached_fingerprint(tmp_path, scheduled):
    """Fresh data, and only then: prepare's cache key includes the output of a task that
    is never cached, so every run (UI, submit, recurring, CronJob) looks at the data."""
    path = tmp_path / "p.yaml"
    done = visionpipe("compile", "--output", str(path), *(["--scheduled"] if scheduled else []))
    assert done.returncode == 0, done.stderr
    spec = next(yaml.safe_load_all(path.read_text()))
    tasks = all_tasks(spec)
    assert tasks["prepare"]["cachingOptions"] == {"enableCache": True}
    for uncached in ("fingerprint", "changes", "validate", "train", "evaluate", "export", "push"):
        assert not tasks[uncached]["cachingOptions"].get("enableCache"), uncached
    source = producer(spec, "prepare", "fingerprint")
    assert source == {"outputParameterKey": "Output", "producerTask": "fingerprint"}
    assert producer(spec, "changes", "data_fingerprint")["producerTask"] == "fingerprint"
    assert tasks["fingerprint"]["inputs"]["parameters"]["data"] == {
        "componentInputParameter": "data"
    }
    assert "cache_key" not in spec["root"]["inputDefinitions"]["parameters"]
    # no schedule-time placeholder anywhere: the data decides, not the clock
    assert "scheduled_time" not in path.read_text() and "schedule_time" not in path.read_text()
    # export and push get the evaluation through the DAG, not by guessing folders
    inner = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    for task in ("export", "push"):
        evaluation = inner[task]["inputs"]["artifacts"]["evaluation"]
        assert evaluation["componentInputArtifact"] == "pipelinechannel--evaluate-evaluation"


def test_compiled_training_requests_a_gpu(compiled):
    executors = compiled["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["image"].endswith(f"visionpipe-gpu:{components.__version__}")
    for name in (
        "exec-fingerprint",
        "exec-changes",
        "exec-prepare",
        "exec-validate",
        "exec-evaluate",
        "exec-export",
        "exec-push",
    ):
        container = executors[name]["container"]
        assert "accelerator" not in container.get("resources", {})
        assert container["image"].endswith(f"visionpipe-cpu:{components.__version__}")
        # no pip install at run time: the image carries the project and kfp
        assert "pip install" not in " ".join(container["command"])


def test_compiled_parameters_have_defaults(compiled):
    params = compiled["root"]["inputDefinitions"]["parameters"]
    assert params["data"]["defaultValue"] == "builtin:digits"
    assert {
        "prepare_config",
        "validate_config",
        "train_config",
        "evaluate_config",
        "export_config",
        "push_config",
    } <= set(params)


@pytest.mark.slow
def test_run_on_a_user_folder_exports_verified_models(tmp_path):
    data = write_digit_images(tmp_path / "photos", classes=(0, 1, 7), per_class=60)
    done = visionpipe(
        "run",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "runs"),
        "--preset",
        "smoke",
        "--run-id",
        "user-folder",
        "--set",
        "train.epochs=10",
        "--set",
        "train.batch_size=16",
        "--set",  # the contract's formats; the optional ones are proven in test_docker_run
        "export.formats=saved_model,tflite,onnx",
        tracked=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "user-folder"
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "run_id",
        "status",
        "data",
        "test_accuracy",
        "macro_f1",
        "blessed",
        "artifacts",
        "timings_s",
    ):
        assert key in summary
    assert summary["status"] == "succeeded" and summary["blessed"] is True
    assert summary["test_accuracy"] >= 0.9
    assert set(summary["timings_s"]) == {
        "prepare",
        "validate",
        "train",
        "evaluate",
        "export",
        "push",
        "total",
    }
    assert summary["fingerprint"].startswith("folder-")
    latest = json.loads(
        (tmp_path / "runs" / "registry" / "visionpipe-classifier" / "latest.json").read_text()
    )
    assert summary["artifacts"]["published"] == latest["uri"]
    assert (Path(latest["uri"]) / "model.onnx").is_file()
    for key in ("report", "tflite", "onnx", "saved_model"):
        assert Path(summary["artifacts"][key]).exists(), key
    parity = json.loads((run_dir / "export" / "parity.json").read_text())
    assert parity["tflite"]["top1_agreement"] >= 0.995 and parity["onnx"]["top1_agreement"] >= 0.995
    assert str(run_dir / "evaluation" / "report.html") in done.stdout
    assert f"published    {latest['uri']}" in done.stdout
    # the model card's test metrics came through the DAG (the evaluation input)
    assert "## Test metrics" in (run_dir / "export" / "model_card.md").read_text()
    # tracked in the embedded MLflow store under the output folder, and said so
    from mlflow import MlflowClient

    from tests.test_tracking import check_tracked

    store = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert summary["tracking"]["uri"] == store and summary["tracking"]["failed"] == []
    assert f"mlflow ui --backend-store-uri {store}" in done.stdout
    check_tracked(MlflowClient(store), summary, latest["uri"].rsplit("/", 1)[0], epochs="10")
    # the stage tasks spooled their calls and the run replayed them (one MLflow import)
    assert (run_dir / "kfp" / "tracking-spool.jsonl.replayed").is_file()

    # the next run is gated against what that run deployed, on the same registry
    registry = tmp_path / "runs" / "registry"
    worse = visionpipe(
        "run",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "runs"),
        "--preset",
        "smoke",
        "--run-id",
        "worse",
        "--set",
        "train.epochs=1",
        "--set",
        "train.learning_rate=0.00001",
        "--set",
        "train.preflight=warn",  # a model this weak on purpose: preflight would stop it
        "--set",
        "evaluate.min_accuracy=0",
        "--set",
        f"evaluate.baseline_model={registry}/visionpipe-classifier",
        "--set",
        f"prepare.keep_splits={registry}/visionpipe-classifier",
        "--set",
        f"push.registry={registry}",
        tracked=True,
    )
    assert worse.returncode == 0, worse.stderr[-3000:]
    second = json.loads((tmp_path / "runs" / "worse" / "summary.json").read_text())
    assert second["blessed"] is False
    assert any(
        f"deployed visionpipe-classifier {latest['version']}" in r
        for r in second["blessing_reasons"]
    )
    assert json.loads((registry / "visionpipe-classifier" / "latest.json").read_text()) == latest
    nights = [json.loads(line) for line in (registry / "visionpipe-classifier" / "history.jsonl")
              .read_text().splitlines()]  # fmt: skip
    assert [n.get("version") for n in nights] == [latest["version"], None]
    assert nights[1]["blessed"] is False and nights[1]["reasons"] == second["blessing_reasons"]
    refused = MlflowClient(store).get_run(second["tracking"]["run_id"]).data.tags
    assert refused["outcome"] == "refused" and refused["blessed"] == "false"


@pytest.mark.slow
def test_unblessed_run_on_builtin_digits_skips_export(tmp_path):
    done = visionpipe(
        "run",
        "--output",
        str(tmp_path / "runs"),
        "--run-id",
        "gate",
        "--set",
        "train.epochs=1",
        "--set",
        "train.width=8",
        "--set",
        "evaluate.min_accuracy=1.0",
        "--set",
        "evaluate.min_macro_f1=1.0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "gate" / "summary.json").read_text())
    assert summary["data"] == "builtin:digits" and summary["blessed"] is False
    assert any("accuracy" in reason for reason in summary["blessing_reasons"])
    assert summary["artifacts"]["tflite"] is None and "export" not in summary["timings_s"]
    assert not (tmp_path / "runs" / "gate" / "export").exists()
    assert "not exported" in done.stdout
    # a console a person reads: stage lines, not kfp.local's executor dumps, which are in
    # the run's logs folder in full
    console = done.stdout + done.stderr
    assert len(console.splitlines()) <= 150, console
    assert "executor" not in console.lower() and "\x1b[" not in console
    logs = tmp_path / "runs" / "gate" / "logs"
    assert str(logs) in console
    for task in ("fingerprint", "prepare", "train", "evaluate"):
        assert f"{task}: success in" in console
        assert f"[{task}] " in (logs / f"{task}.log").read_text() or task == "fingerprint"
    assert "executor_output.json" in (logs / "runner.log").read_text()
    assert "[train] epoch 1/1: accuracy" in console


@pytest.mark.slow
def test_data_error_inside_the_pipeline_is_one_line_and_exit_2(tmp_path):
    data = write_digit_images(tmp_path / "data", per_class=10)
    for n in range(5):
        (data / "digit_0" / f"junk{n}.png").write_bytes(b"junk")
    done = visionpipe(
        "run", "--data", str(data), "--output", str(tmp_path / "runs"), "--run-id", "bad"
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("visionpipe: error: 5 of 35 images") and "max_rejected_fraction" in last
    summary = json.loads((tmp_path / "runs" / "bad" / "summary.json").read_text())
    assert summary["status"] == "failed"
    # the failed task's last lines and the path of its full log are on the console
    log = tmp_path / "runs" / "bad" / "logs" / "prepare.log"
    assert "the last" in done.stdout and str(log) in done.stdout
    assert "junk" in log.read_text()


def test_compiled_caching_and_limits(compiled):
    tasks = all_tasks(compiled)
    assert tasks["prepare"]["cachingOptions"].get("enableCache") is True
    for name in ("train", "evaluate"):
        assert not tasks[name]["cachingOptions"].get("enableCache")
    train = compiled["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert train["cpuLimit"] == 8.0 and train["memoryLimit"] == 32.0


def test_compiled_images_are_the_ones_make_images_tags(compiled):
    """pipelines/images.py and the Makefile's `images` target name the same references."""
    import re

    import components

    makefile = Path(__file__).parent.parent.joinpath("Makefile").read_text()
    cpu = re.search(r"^IMAGE \?= (\S+)", makefile, re.M)[1]
    gpu = re.search(r"^GPU_IMAGE \?= (\S+)", makefile, re.M)[1]
    version = components.__version__
    assert re.search(r'^version = "(.+)"', Path("pyproject.toml").read_text(), re.M)[1] == version
    executors = compiled["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["image"] == f"{gpu}:{version}"
    for name in ("exec-prepare", "exec-evaluate", "exec-export", "exec-push"):
        assert executors[name]["container"]["image"] == f"{cpu}:{version}"
