"""visionpipe tune: a real KerasTuner search whose trials are the real train stage, and
the Katib Experiment for the same search, validated offline (no Katib runs here)."""

import subprocess

import pytest
import yaml

from components.infra.errors import UserError
from pipelines import katib
from pipelines.cli import main, run_configs
from pipelines.cluster import ClusterSettings
from pipelines.tune.config import TuneConfig
from tests.conftest import VISIONPIPE

# trials of one epoch of width 8 on 16 px images (prepared in-process: 90 images need no
# decode pool); the one-batch preflight check (test_preflight.py's) and weight histograms
# are left out except where a test is about them. What is tested is the search around the
# trials (its records, its resume, its scores), which a trial this small exercises fully.
TINY = ["--set", "train.epochs=1", "--set", "train.width=8"]
TINY += ["--set", "prepare.image_size=16", "--set", "prepare.workers=1"]
QUICK = ["--set", "train.preflight=off", "--set", "train.tensorboard_histograms=false"]


def tiny_images(folder):
    """Three digits, 30 images each, written at 16 px."""
    from tests.conftest import write_digit_images

    return write_digit_images(folder, per_class=30, size=16, formats=("png",))


def tune(output, capsys, *extra, data):
    """`visionpipe tune` in this process (its own command line is test_trials_can_be_...'s
    subprocess): the exit code and what it wrote on stderr."""
    code = main(["tune", "--data", str(data), "--output", str(output), *TINY, *QUICK, *extra])
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_a_search_leaves_a_best_config_that_run_accepts_and_resumes(tmp_path, capsys):
    data = tiny_images(tmp_path / "digits")
    out = tmp_path / "tune"
    code, err = tune(out, capsys, "--trials", "2", data=data)
    assert code == 0, err[-3000:]
    assert "trial 0:" in err and "trial 1:" in err
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("trial,learning_rate")
    assert (out / "trials.png").stat().st_size > 0
    assert (out / "best_model" / "model.keras").exists()
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert set(best["train"]) >= {"learning_rate", "dropout", "width", "epochs"}
    configs = run_configs(str(out / "best.yaml"), [])  # what `visionpipe run --config` does
    assert configs["train"]["epochs"] == 1
    # KerasTuner's state: the same command with a bigger budget runs only the new trial
    code, err = tune(out, capsys, "--trials", "3", data=data)
    assert code == 0, err[-3000:]
    assert "trial 2:" in err and "trial 0:" not in err
    assert "using the dataset prepared earlier" in err
    assert len((out / "trials.csv").read_text().splitlines()) == 4


@pytest.mark.slow
def test_trials_that_cannot_learn_score_nothing_and_say_so(tmp_path, capsys):
    """The preflight check is what refuses the trial, so it stays on; a learning rate of
    1e-9 cannot lower any batch's loss, so the tiny digits show it as well as all of them."""
    config = tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump({"tune": {"space": {"learning_rate": [1e-9]}}}))
    data = tiny_images(tmp_path / "digits")
    code = main(
        ["tune", "--data", str(data), "--output", str(tmp_path / "t"), "--config", str(config),
         "--trials", "1", *TINY]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "no trial completed" in err and "Traceback" not in err
    assert "preflight failed" in (tmp_path / "t" / "trials.csv").read_text()


def test_the_search_space_is_validated_like_every_section():
    with pytest.raises(UserError, match="space.epochs: not a train setting"):
        TuneConfig.from_dict({"space": {"epochs": [1, 2]}})
    with pytest.raises(UserError, match="space.colour"):
        TuneConfig.from_dict({"space": {"colour": ["red"]}})
    with pytest.raises(UserError, match="expected min < max"):
        TuneConfig.from_dict({"space": {"learning_rate": {"min": 0.1, "max": 0.01}}})
    with pytest.raises(UserError, match="log range needs min > 0"):
        TuneConfig.from_dict({"space": {"dropout": {"min": 0.0, "max": 0.5, "log": True}}})
    with pytest.raises(UserError, match="optimizer"):
        TuneConfig.from_dict({"space": {"optimizer": ["adamw", "rmsprop"]}})
    with pytest.raises(UserError, match="not numeric"):
        TuneConfig.from_dict({"space": {"optimizer": {"min": 1, "max": 2}}})
    with pytest.raises(UserError, match="tune config algorithm"):
        run_configs(None, ["tune.algorithm=grid"])
    assert "tune" not in run_configs(None, ["tune.trials=3"])  # run ignores the section


@pytest.mark.parametrize("algorithm", ["bayesian", "hyperband", "random"])
def test_the_katib_experiment_matches_katib_and_kubernetes_schemas(tmp_path, algorithm):
    out = tmp_path / "experiment.yaml"
    code = main(
        ["tune", "--katib", "--output", str(out), "--algorithm", algorithm, "--trials", "12"]
    )
    assert code == 0
    obj = yaml.safe_load(out.read_text())
    assert katib.validate(obj) == []
    spec = obj["spec"]
    assert obj["apiVersion"] == "kubeflow.org/v1beta1" and obj["kind"] == "Experiment"
    assert spec["objective"] == {
        "type": "maximize",
        "objectiveMetricName": "val_accuracy",
        "additionalMetricNames": ["val_loss"],
    }
    assert spec["algorithm"]["algorithmName"] == katib.ALGORITHMS[algorithm]
    assert spec["maxTrialCount"] == 12
    names = {p["name"]: p for p in spec["parameters"]}
    assert names["learning_rate"]["feasibleSpace"]["distribution"] == "logUniform"
    assert names["width"] == {
        "name": "width",
        "parameterType": "categorical",
        "feasibleSpace": {"list": ["8", "16", "32"]},
    }
    template = spec["trialTemplate"]
    (container,) = template["trialSpec"]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == template["primaryContainerName"]
    assert container["image"].startswith("visionpipe/visionpipe-gpu:")
    assert container["command"][:2] == ["visionpipe", "train"]
    assert "--print-metrics" in container["command"]
    assert "learning_rate=${trialParameters.learningRate}" in container["command"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    if algorithm == "hyperband":
        settings = {s["name"]: s["value"] for s in spec["algorithm"]["algorithmSettings"]}
        assert settings["resource_name"] == "epochs" and "epochs" in names
        assert spec["parallelTrialCount"] >= 3**3  # eta^s_max for 40 epochs, eta 3
    else:
        assert "epochs=40" in container["command"]


def test_katib_validation_catches_what_the_api_server_would_refuse():
    obj = katib.experiment({}, {}, ClusterSettings())
    obj["spec"]["objective"]["objectiveMetric"] = obj["spec"]["objective"].pop(
        "objectiveMetricName"
    )
    obj["spec"]["maxTrialCount"] = "ten"
    job = obj["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    job["containers"][0]["command"].append("--set=x=${trialParameters.nowhere}")
    job["restartPolicy"] = 3
    problems = " | ".join(katib.validate(obj))
    assert "'objectiveMetric' was unexpected" in problems
    assert "maxTrialCount: 'ten' is not of type 'integer'" in problems
    assert "undefined trialParameters.nowhere" in problems
    assert "restartPolicy" in problems


def test_katib_trials_read_a_bucket_not_a_local_folder(tmp_path):
    with pytest.raises(UserError, match="not in a bucket"):
        katib.write_experiment(tmp_path / "e.yaml", {}, {}, ClusterSettings(), "/data/ds")
    path = katib.write_experiment(
        tmp_path / "e.yaml",
        {"train": {"batch_size": 64}},
        {},
        ClusterSettings(gpu_count=0, pipeline_root="gs://b/root"),
        "gs://b/root/dataset",
    )
    obj = yaml.safe_load(path.read_text())
    (container,) = obj["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert "gs://b/root/dataset" in container["command"] and "batch_size=64" in container["command"]
    assert "gs://b/root/katib/${trialParameters.trialName}/model" in container["command"]
    assert (
        container["image"].startswith("visionpipe/visionpipe-cpu:") and "resources" not in container
    )


@pytest.mark.slow
def test_trials_can_be_scored_by_cross_validation(tmp_path):
    """tune.cross_validate=2: each trial is train --cv 2, scored by the folds' mean (not its
    one val split); trials.csv says so and the score is that mean."""
    import json

    data = tiny_images(tmp_path / "digits")
    out = tmp_path / "tune"
    done = subprocess.run(
        [VISIONPIPE, "tune", "--data", str(data), "--output", str(out), *TINY, *QUICK,
         "--trials", "1", "--set", "tune.cross_validate=2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "val_accuracy as the mean of 2 folds" in done.stderr
    trial = next((out / "tuner").glob("trial_*"))
    cv = json.loads((trial / "model" / "cross_validation.json").read_text())
    info = json.loads((trial / "visionpipe_trial.json").read_text())
    assert info["scored_on"] == "mean of 2 folds"
    assert len(cv["per_fold"]) == 2 and info["val_accuracy"] == cv["mean"]["val_accuracy"]
    assert "mean of 2 folds" in (out / "trials.csv").read_text()
    assert "cross_validate" not in yaml.safe_load((out / "best.yaml").read_text())["train"]
